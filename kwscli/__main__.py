from kwscli.cli import main

main()
