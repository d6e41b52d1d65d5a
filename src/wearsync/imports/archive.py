"""The uploaded `export.zip`: finding its export.xml, and reading it with the caps that keep a
hostile archive (a zip bomb, an entry lying about its size) from filling memory or disk."""

import zipfile
import zlib
from pathlib import Path
from typing import IO

# export.xml under any folder (the Health app writes `apple_health_export/`), or its localised name.
EXPORT_NAMES = ("export.xml", "导出.xml")
# Bytes XML 1.0 forbids that old exports carry (a stray \x0b): dropped, as other readers do.
_FORBIDDEN = bytes(b for b in range(32) if b not in (9, 10, 13))


class BadExport(Exception):
    """The upload or its export.xml cannot be imported; the message says why, for the user."""


class TooLarge(BadExport):
    """Past a cap on the upload's or its export.xml's size."""


def find_export(path: Path, max_xml_bytes: int) -> zipfile.ZipInfo:
    """The export.xml entry of the zip at `path`; BadExport saying what is wrong with the archive,
    TooLarge when export.xml says it is bigger than `max_xml_bytes` uncompressed."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [i for i in archive.infolist() if _is_export(i.filename)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise BadExport(f"The upload is not a zip archive (an Apple Health export.zip): {e}") from None
    if not entries:
        raise BadExport("The zip holds no export.xml: upload the export.zip the Health app made")
    entry = min(entries, key=lambda i: i.filename.count("/"))  # the shallowest one
    if entry.flag_bits & 0x1:
        raise BadExport("export.xml is encrypted in the zip")
    if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BadExport(f"export.xml is compressed with a method this reader does not know ({entry.compress_type})")
    if entry.file_size > max_xml_bytes:
        raise TooLarge(
            f"export.xml is {entry.file_size} bytes uncompressed, over the limit of {max_xml_bytes}"
            " (WEARSYNC_IMPORT_MAX_XML_BYTES)"
        )
    return entry


def _is_export(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in EXPORT_NAMES and not name.startswith("__MACOSX/")


class ExportStream:
    """export.xml's bytes as a file for the parser: never more than the entry declared nor than
    `max_bytes` (a zip bomb stops there), nor more than `max_element_bytes` for one element
    (memory stays bounded however the file is made), without the control bytes XML forbids.
    `read_bytes` counts what was read, uncompressed, for progress."""

    def __init__(self, path: Path, entry: zipfile.ZipInfo, max_bytes: int, max_element_bytes: int) -> None:
        self._archive = zipfile.ZipFile(path)
        self._file: IO[bytes] = self._archive.open(entry)
        self.total_bytes = entry.file_size
        self._limit = min(entry.file_size, max_bytes)
        self._max_element = max_element_bytes
        self.read_bytes = self._marked = self.newlines = 0
        self.ended = False  # read to its end

    def mark(self) -> None:
        """An element ended here: the next may take `max_element_bytes` from here."""
        self._marked = self.read_bytes

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._file.read(size if size > 0 else 1 << 16)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
            raise BadExport(f"export.xml is damaged in the zip: {e}") from None
        self.read_bytes += len(data)
        self.newlines += data.count(b"\n")
        self.ended = not data
        if self.read_bytes > self._limit:
            raise TooLarge(
                f"export.xml inflates past {self._limit} bytes, more than its entry in the zip says"
                " or than WEARSYNC_IMPORT_MAX_XML_BYTES allows: refused as a zip bomb"
            )
        if self.read_bytes - self._marked > self._max_element:
            raise TooLarge(
                f"export.xml has an element of more than {self._max_element} bytes (after byte {self._marked}):"
                " no Health app writes one"
            )
        return data.translate(None, _FORBIDDEN)

    def close(self) -> None:
        self._file.close()
        self._archive.close()

    def __enter__(self) -> "ExportStream":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
