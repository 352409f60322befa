"""When a scene was acquired: from its metadata tags, else from its file name (a Sentinel-2
``…_20170216T102101_B02.jp2``, a Landsat ``LC08_L1TP_…_20200101_…``). ``stack`` keeps the time
of its inputs in ``ACQUISITION_DATE``; ``predict --stac`` gives it as the item's ``datetime``."""

from __future__ import annotations

import datetime as dt
import re

ACQUISITION_TAGS = (  # scene metadata that holds the acquisition time, most specific first
    "DATATAKE_1_DATATAKE_SENSING_START",
    "PRODUCT_START_TIME",
    "SENSING_TIME",
    "ACQUISITION_DATE",
    "DATE_ACQUIRED",
)
FILE_TIME_TAG = "TIFFTAG_DATETIME"  # often the file's own time: after the name
NAME_TIMES = (  # (pattern, strptime format): a date and time, then a date alone
    (re.compile(r"(?<!\d)(\d{8}T\d{6})(?!\d)"), "%Y%m%dT%H%M%S"),
    (re.compile(r"(?<!\d)((?:19|20)\d{6})(?!\d)"), "%Y%m%d"),
)


def parse_time(text: str) -> dt.datetime | None:
    """An ISO 8601 or TIFF (``2024:06:15 10:30:00``) time, in UTC where no zone is given."""
    text = text.strip().replace("Z", "+00:00")
    for parse in (
        dt.datetime.fromisoformat,
        lambda t: dt.datetime.strptime(t, "%Y:%m:%d %H:%M:%S"),
    ):
        try:
            when = parse(text)
        except ValueError:
            continue
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return None


def time_in_name(name: str) -> dt.datetime | None:
    """The first date and time (or date) a file name holds, in UTC."""
    for pattern, form in NAME_TIMES:
        for found in pattern.findall(name):
            try:
                return dt.datetime.strptime(found, form).replace(tzinfo=dt.timezone.utc)
            except ValueError:  # 20171399: digits, not a date
                continue
    return None


def acquired(scene: object, tags: dict) -> tuple[dt.datetime | None, str]:
    """The acquisition time of ``scene`` (a path, URL or /vsi… path, or its file name) with
    metadata ``tags``, and where it came from (``scene metadata SENSING_TIME``, ``file
    name``); None where nothing says."""
    name = str(scene).replace("\\", "/").rsplit("/", 1)[-1]
    for tag in ACQUISITION_TAGS:
        when = parse_time(tags[tag]) if tags.get(tag) else None
        if when is not None:
            return when, f"scene metadata {tag}"
    when = time_in_name(name)
    if when is not None:
        return when, "file name"
    when = parse_time(tags[FILE_TIME_TAG]) if tags.get(FILE_TIME_TAG) else None
    if when is not None:
        return when, f"scene metadata {FILE_TIME_TAG}"
    return None, "none"


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
