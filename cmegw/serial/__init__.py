"""Serial lines: the UART side of the M-Bus adapters (`line`: the line; `adapter`: what the adapter is and its slack)."""
