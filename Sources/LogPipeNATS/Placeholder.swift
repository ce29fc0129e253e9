import LogPipe
