"""
M-Bus: telegrams (L{frames}), data records (L{records}) and a simulated bus
(L{simulator}).
"""
