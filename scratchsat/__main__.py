from scratchsat.cli import main

main()
