from pegasus.cli import main

main()
