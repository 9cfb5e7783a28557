from portscope.entry import run

run()
