from kaic.cli.main import main

main()
