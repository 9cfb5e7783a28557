from portscope.console import run

run()
