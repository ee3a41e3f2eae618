"""mqctl: the command line of mq."""
