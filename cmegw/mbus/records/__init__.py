# -*- test-case-name: tests.test_mbus_records -*-
"""
EN 13757-3 variable data structure: encode and decode data records.

A record is DIF [DIFE...] VIF [VIFE...] data.  The encoder builds the user
data of an RSP_UD for the simulator; the decoder reads what real meters send.

The code lives in private modules: `_coding` (DIF/VIF codes, codings, the
application header), `_encode` (the encoder), `_decode` (the decoder),
`_values` (one value: BCD, dates, scaling) and `_units` (the unit and medium
tables).  This package's namespace is the interface; its names are loaded
when first used (the first telegram decoded, the first reply encoded): a
gateway that carries the tunnel's bytes never loads the decoder's tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cmegw.lazy import lazy_names

if TYPE_CHECKING:
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
    from cmegw.mbus.records._units import (
        medium_name,
    )

_HOMES = {
    "Coding": "_coding",
    "Function": "_coding",
    "Header": "_coding",
    "ApplicationError": "_decode",
    "DecodeError": "_decode",
    "Record": "_decode",
    "Telegram": "_decode",
    "TooManyExtensions": "_decode",
    "TruncatedData": "_decode",
    "UnsupportedTelegram": "_decode",
    "decode_frame": "_decode",
    "decode_user_data": "_decode",
    "EncodeError": "_encode",
    "RecordSpec": "_encode",
    "date_point": "_encode",
    "datetime_point": "_encode",
    "duration": "_encode",
    "encode_dif": "_encode",
    "encode_user_data": "_encode",
    "encode_value": "_encode",
    "error_flags": "_encode",
    "fabrication_number": "_encode",
    "firmware_version": "_encode",
    "model_version": "_encode",
    "plain_text_unit": "_encode",
    "rsp_ud": "_encode",
    "scaled": "_encode",
    "medium_name": "_units",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_names(__name__, _HOMES)
