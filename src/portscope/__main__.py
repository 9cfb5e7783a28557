from portscope.cli import main

main()
