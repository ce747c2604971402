"""Tiny test media of the kinds real corpora hold and the demo corpus never makes, written on the spot.

- `write_legacy_codec_files`: one file per legacy codec, made by ffmpeg's own encoders.
- `write_ogv_with_skeleton`: a Theora/Vorbis .ogv that also holds an Ogg Skeleton stream (ffprobe: "Data")
  and a zero-size Theora packet (a duplicated frame), like .ogv files made by ffmpeg2theora or oggz-chop.
  ffmpeg's Ogg muxer writes neither, so the pages are edited here.
- `write_mkv_with_subtitle_and_attachment`: H.264/Vorbis plus a subtitle and an attachment stream.
"""

from __future__ import annotations

import struct
from pathlib import Path

from components.demo_data.synth import run_ffmpeg

_VIDEO = ["-f", "lavfi", "-i", "testsrc2=s=96x64:r=10:d=1"]
_AUDIO = ["-f", "lavfi", "-i", "sine=f=440:sample_rate=22050:d=1"]

# file name -> (ffmpeg arguments, expected video codec, expected audio codec), as ffprobe names them.
# qdm2 (the QuickTime audio codec real files had) has no encoder in ffmpeg, so adpcm_ima_qt, QuickTime's
# other legacy audio codec, stands in. rpza is 64 px wide: ffmpeg 5.1's rpza encoder corrupts its heap at
# other widths (96, 160).
LEGACY_CODEC_FILES: dict[str, tuple[list[str], str | None, str | None]] = {
    "msmpeg4v3.avi": ([*_VIDEO, *_AUDIO, "-c:v", "msmpeg4", "-c:a", "adpcm_ms"], "msmpeg4v3", "adpcm_ms"),
    "cinepak.avi": ([*_VIDEO, *_AUDIO, "-c:v", "cinepak", "-c:a", "pcm_u8"], "cinepak", "pcm_u8"),
    "msvideo1.avi": ([*_VIDEO, "-c:v", "msvideo1"], "msvideo1", None),
    "rpza.mov": (
        ["-f", "lavfi", "-i", "testsrc2=s=64x64:r=10:d=1", *_AUDIO, "-c:v", "rpza", "-c:a", "adpcm_ima_qt"],
        "rpza",
        "adpcm_ima_qt",
    ),
    "ffv1.mkv": ([*_VIDEO, "-c:v", "ffv1"], "ffv1", None),
    "pcm_u8.wav": ([*_AUDIO, "-c:a", "pcm_u8"], None, "pcm_u8"),
}


def write_legacy_codec_files(folder: Path) -> dict[str, tuple[str | None, str | None]]:
    """Write every file of LEGACY_CODEC_FILES; returns name -> (video codec, audio codec)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (args, _, _) in LEGACY_CODEC_FILES.items():
        run_ffmpeg(args, folder / name)
    return {name: (video, audio) for name, (_, video, audio) in LEGACY_CODEC_FILES.items()}


def write_mkv_with_subtitle_and_attachment(path: Path) -> Path:
    srt = path.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:00,500\nhello\n")
    notes = path.with_suffix(".notes.txt")
    notes.write_text("an attachment, as fonts are in real .mkv files\n")
    args = [*_VIDEO, *_AUDIO, "-i", str(srt), "-map", "0", "-map", "1", "-map", "2"]
    args += ["-c:v", "libx264", "-c:a", "libvorbis", "-c:s", "srt"]
    args += ["-attach", str(notes), "-metadata:s:t", "mimetype=text/plain"]
    run_ffmpeg(args, path)
    srt.unlink()
    notes.unlink()
    return path


# ----------------------------------------------------------------------------- Ogg page editing
def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def _ogg_page(header_type: int, granule: int, serial: int, sequence: int, lacing: list[int], body: bytes) -> bytes:
    page = bytearray(b"OggS" + bytes([0, header_type]) + struct.pack("<qIII", granule, serial, sequence, 0))
    page += bytes([len(lacing), *lacing]) + body
    crc = 0
    for byte in page:  # CRC-32, polynomial 0x04C11DB7, unreflected, over the page with a zero CRC field
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    page[22:26] = struct.pack("<I", crc)
    return bytes(page)


def _split_pages(data: bytes) -> list[bytes]:
    pages, at = [], 0
    while at < len(data):
        assert data[at : at + 4] == b"OggS", f"no Ogg page at byte {at}"
        num_segments = data[at + 26]
        size = 27 + num_segments + sum(data[at + 27 : at + 27 + num_segments])
        pages.append(data[at : at + size])
        at += size
    return pages


def _serial(page: bytes) -> int:
    return struct.unpack("<I", page[14:18])[0]


def _blank_first_inter_frame(page: bytes) -> bytes | None:
    """The page with its first complete Theora inter frame emptied (a zero-size packet), or None."""
    header_type, num_segments = page[5], page[26]
    granule, serial, sequence = struct.unpack("<qII", page[6:22])
    lacing, body = list(page[27 : 27 + num_segments]), page[27 + num_segments :]
    start_segment = offset = size = 0
    for segment, lace in enumerate(lacing):
        size += lace
        if lace == 255:
            continue  # the packet goes on
        continued = start_segment == 0 and header_type & 0x01  # began on the previous page
        if size and not continued and body[offset] & 0xC0 == 0x40:  # data packet, inter frame
            lacing = lacing[:start_segment] + [0] + lacing[segment + 1 :]
            return _ogg_page(header_type, granule, serial, sequence, lacing, body[:offset] + body[offset + size :])
        start_segment, offset, size = segment + 1, offset + size, 0
    return None


def write_ogv_with_skeleton(path: Path) -> Path:
    """Theora + Vorbis + an Ogg Skeleton 3.0 stream, with the second video frame a zero-size packet."""
    plain = path.with_suffix(".plain.ogv")
    run_ffmpeg([*_VIDEO, *_AUDIO, "-c:v", "libtheora", "-c:a", "libvorbis"], plain)
    pages = _split_pages(plain.read_bytes())
    plain.unlink()
    theora_serial = next(_serial(p) for p in pages if p[27 + p[26] :].startswith(b"\x80theora"))
    for index, page in enumerate(pages):
        if page[5] & 0x02 == 0 and _serial(page) == theora_serial:
            if (blanked := _blank_first_inter_frame(page)) is not None:
                pages[index] = blanked
                break
    else:
        raise AssertionError("no Theora inter frame found to blank")
    serial = 0x5EE1E7
    # fishead: version 3.0, presentation time 0/1000, base time 0/1000, no UTC
    fishead = b"fishead\0" + struct.pack("<HHqqqq", 3, 0, 0, 1000, 0, 1000) + bytes(20)
    num_bos = sum(1 for p in pages if p[5] & 0x02)
    skeleton_bos = _ogg_page(0x02, 0, serial, 0, [len(fishead)], fishead)
    skeleton_eos = _ogg_page(0x04, 0, serial, 1, [0], b"")
    # Every stream's first page comes before any other page; the skeleton's is first by convention.
    path.write_bytes(b"".join([skeleton_bos, *pages[:num_bos], skeleton_eos, *pages[num_bos:]]))
    return path
