from kwscli.entry import main

main()
