# -*- test-case-name: tests.test_mbus_records -*-
"""
EN 13757-3 variable data structure: encode and decode data records.

A record is DIF [DIFE...] VIF [VIFE...] data.  The encoder builds the user
data of an RSP_UD for the simulator; the decoder reads what real meters send.

The code lives in private modules: `_coding` (DIF/VIF codes, codings, the
application header), `_encode` (the encoder), `_decode` (the decoder),
`_values` (one value: BCD, dates, scaling) and `_units` (the unit and medium
tables).  This package's namespace is the interface.
"""

from __future__ import annotations

from cmegw.mbus.records._coding import (
    Coding,
    Function,
    Header,
)
from cmegw.mbus.records._decode import (
    ApplicationError,
    DecodeError,
    Record,
    Telegram,
    TooManyExtensions,
    TruncatedData,
    UnsupportedTelegram,
    decode_frame,
    decode_user_data,
)
from cmegw.mbus.records._encode import (
    EncodeError,
    RecordSpec,
    date_point,
    datetime_point,
    duration,
    encode_dif,
    encode_user_data,
    encode_value,
    error_flags,
    fabrication_number,
    firmware_version,
    model_version,
    plain_text_unit,
    rsp_ud,
    scaled,
)
from cmegw.mbus.records._units import medium_name

__all__ = [
    "ApplicationError",
    "Coding",
    "DecodeError",
    "EncodeError",
    "Function",
    "Header",
    "Record",
    "RecordSpec",
    "Telegram",
    "TooManyExtensions",
    "TruncatedData",
    "UnsupportedTelegram",
    "date_point",
    "datetime_point",
    "decode_frame",
    "decode_user_data",
    "duration",
    "encode_dif",
    "encode_user_data",
    "encode_value",
    "error_flags",
    "fabrication_number",
    "firmware_version",
    "medium_name",
    "model_version",
    "plain_text_unit",
    "rsp_ud",
    "scaled",
]
