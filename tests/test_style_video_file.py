"""The H.264 file sink with audio passthrough, on real files made here with GStreamer.

Each test writes a short source clip (x264 video, AAC or Vorbis audio, or no audio) through a
real GStreamer pipeline, runs it through the style stream, and reads the result back with real
demuxers and decoders: GstPbutils.Discoverer for the codecs, parsebin for the compressed audio
packets, decodebin for the audio samples and OpenCV's FFmpeg for the video frames.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from video_files import decoded_frames

from engines.convert.parity import astronaut_rgb
from engines.errors import BackendUnavailableError
from pipeline.capture.gstreamer_source import require_gstreamer
from pipeline.metrics import PipelineMetrics, StyleMetrics
from pipeline.style.config import StyleStreamConfig
from pipeline.style.errors import SinkError
from pipeline.style.h264_sink import H264FileSink, H264Settings, VideoFileSpec
from pipeline.style.stream import StyleStream

gi = pytest.importorskip("gi", reason="the H.264 file sink needs PyGObject (facestream[gstreamer])")
# through require_gstreamer: it keeps libgcc_s's C++ unwinder in front of GStreamer's libunwind,
# without which torch's ONNX export later in this process aborts
try:
    require_gstreamer()
except BackendUnavailableError as _missing:
    pytest.skip(str(_missing), allow_module_level=True)
gi.require_version("Gst", "1.0")
gi.require_version("GstPbutils", "1.0")
from gi.repository import Gst, GstPbutils  # noqa: E402

for _element in ("x264enc", "avenc_aac", "vorbisenc", "lamemp3enc", "matroskamux", "mp4mux"):
    if Gst.ElementFactory.find(_element) is None:
        pytest.skip(f"GStreamer element {_element} is missing", allow_module_level=True)

RATE = 48_000
WIDTH, HEIGHT = 160, 96
# a variable frame rate: 25 fps for 20 frames, then 10 fps; the flash (and the beep) at frame 24
FRAME_TIMES = tuple([index * 0.04 for index in range(20)] + [0.8 + k * 0.1 for k in range(1, 11)])
FLASH_INDEX = 24
BEEP_SECONDS = 0.2
TIMEOUT_NS = 60 * Gst.SECOND
AAC_PACKET_SECONDS = 1024 / RATE


@dataclass(frozen=True, slots=True)
class Clip:
    """A source clip made by ``_write_clip`` and when its flash and beep are."""

    path: Path
    frame_times: tuple[float, ...]
    flash_seconds: float


def _frame(index: int) -> npt.NDArray[np.uint8]:
    base = cv2.resize(astronaut_rgb()[:, :, ::-1], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    scale = 1.0 if index == FLASH_INDEX else 0.3
    return np.ascontiguousarray((base * scale).astype(np.uint8))


def _samples(total_seconds: float, beep_at: float) -> npt.NDArray[np.int16]:
    """Silence with a 1 kHz beep of BEEP_SECONDS starting at ``beep_at``."""
    times = np.arange(round(total_seconds * RATE)) / RATE
    beep = (times >= beep_at) & (times < beep_at + BEEP_SECONDS)
    wave = np.where(beep, 0.5 * np.sin(2 * math.pi * 1000 * times), 0.0)
    return np.asarray(wave * 32767, dtype=np.int16)


def _run_to_eos(pipeline: Any) -> None:
    pipeline.set_state(Gst.State.PLAYING)
    message = pipeline.get_bus().timed_pop_filtered(
        TIMEOUT_NS, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipeline.set_state(Gst.State.NULL)
    assert message is not None, "GStreamer did not finish in time"
    assert message.type == Gst.MessageType.EOS, message.parse_error()[0].message


def _write_clip(
    path: Path, audio: str | None, frame_times: tuple[float, ...] = FRAME_TIMES
) -> Clip:
    """x264 video with ``frame_times``; audio "aac" or "mp3" (mp4), "vorbis" (mkv) or None
    (mp4)."""
    caps = f"video/x-raw,format=BGR,width={WIDTH},height={HEIGHT},framerate=25/1"
    mux = "matroskamux" if audio == "vorbis" else "mp4mux"
    encoder = {
        "vorbis": "vorbisenc",
        "mp3": "lamemp3enc ! mpegaudioparse",
        "aac": "avenc_aac ! aacparse",
    }.get(audio or "", "")
    line = (
        f'appsrc name=v format=time caps="{caps}" ! videoconvert ! video/x-raw,format=I420 '
        f"! x264enc speed-preset=ultrafast key-int-max=10 bframes=0 ! h264parse ! {mux} name=m "
        f"! filesink location={path} "
    )
    if audio is not None:
        line += (
            f'appsrc name=a format=time caps="audio/x-raw,format=S16LE,rate={RATE},channels=1,'
            f'layout=interleaved" ! audioconvert ! {encoder} ! m. '
        )
    pipeline = Gst.parse_launch(line)
    video = pipeline.get_by_name("v")
    ends = (*frame_times[1:], frame_times[-1] + 0.1)
    for index, (start, end) in enumerate(zip(frame_times, ends, strict=True)):
        buffer = Gst.Buffer.new_wrapped(_frame(index).tobytes())
        buffer.pts = round(start * Gst.SECOND)
        buffer.duration = round((end - start) * Gst.SECOND)
        video.emit("push-buffer", buffer)
    video.emit("end-of-stream")
    flash = frame_times[FLASH_INDEX]
    if audio is not None:
        source = pipeline.get_by_name("a")
        samples = _samples(ends[-1], beep_at=flash)
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024]
            buffer = Gst.Buffer.new_wrapped(chunk.tobytes())
            buffer.pts = round(start / RATE * Gst.SECOND)
            buffer.duration = round(len(chunk) / RATE * Gst.SECOND)
            source.emit("push-buffer", buffer)
        source.emit("end-of-stream")
    _run_to_eos(pipeline)
    return Clip(path, frame_times, flash)


def _stream_types(path: Path) -> dict[str, list[str]]:
    """Caps of the file's video and audio streams, as Discoverer reports them."""
    info = GstPbutils.Discoverer.new(TIMEOUT_NS).discover_uri(path.resolve().as_uri())
    return {
        "video": [stream.get_caps().to_string() for stream in info.get_video_streams()],
        "audio": [stream.get_caps().to_string() for stream in info.get_audio_streams()],
    }


def _pull_all(pipeline: Any, sink: Any) -> list[Any]:
    pipeline.set_state(Gst.State.PLAYING)
    samples = []
    while (sample := sink.emit("try-pull-sample", TIMEOUT_NS)) is not None:
        samples.append(sample)
    error = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    assert error is None, error.parse_error()[0].message
    return samples


def _audio_packets(path: Path) -> list[tuple[int, bytes]]:
    """(pts in ns, bytes) of every compressed audio packet, as the demuxer hands them out."""
    pipeline = Gst.parse_launch(
        f"filesrc location={path} ! parsebin name=d appsink name=s sync=false"
    )
    sink = pipeline.get_by_name("s")

    def on_pad(_element: Any, pad: Any) -> None:
        name = pad.query_caps(None).get_structure(0).get_name()
        if name.startswith("audio/") and not sink.get_static_pad("sink").is_linked():
            pad.link(sink.get_static_pad("sink"))

    pipeline.get_by_name("d").connect("pad-added", on_pad)
    packets = []
    for sample in _pull_all(pipeline, sink):
        buffer = sample.get_buffer()
        packets.append((int(buffer.pts), bytes(buffer.extract_dup(0, buffer.get_size()))))
    return packets


def _beep_onset(path: Path) -> float:
    """Seconds at which the decoded audio first rises above a tenth of full scale."""
    pipeline = Gst.parse_launch(
        f"filesrc location={path} ! decodebin ! audioconvert ! audioresample "
        f"! audio/x-raw,format=F32LE,channels=1,rate={RATE} ! appsink name=s sync=false"
    )
    sink = pipeline.get_by_name("s")
    for sample in _pull_all(pipeline, sink):
        buffer = sample.get_buffer()
        values = np.frombuffer(buffer.extract_dup(0, buffer.get_size()), dtype=np.float32)
        loud = np.flatnonzero(np.abs(values) > 0.1)
        if loud.size:
            return float(buffer.pts / Gst.SECOND + loud[0] / RATE)
    raise AssertionError(f"{path}: no beep in the audio")


def _video_frames(path: Path) -> tuple[list[float], list[float], tuple[int, int]]:
    """Presentation times (s) and mean brightness of every frame, and the frame size."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    times, brightness = [], []
    size = (0, 0)
    ok, image = capture.read()
    while ok:
        times.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
        brightness.append(float(image.mean()))
        size = (image.shape[1], image.shape[0])
        ok, image = capture.read()
    capture.release()
    return times, brightness, size


def _stylize(source: Path, out: Path, **options: Any) -> StyleStream:
    config = StyleStreamConfig.model_validate(
        {"source": str(source), "style": "udnie", "out_file": out, "threads": 1, **options}
    )
    registry = CollectorRegistry()
    stream = StyleStream(config, StyleMetrics.create(registry), PipelineMetrics.create(registry))
    with stream:
        stream.run()
    return stream


def _flash_time(times: Sequence[float], brightness: Sequence[float]) -> float:
    return times[int(np.argmax(brightness))]


def test_h264_file_keeps_the_source_audio_unchanged_and_in_sync(tmp_path: Path) -> None:
    """File in, file out: the mp4 has H.264 video and the source's whole AAC track, packet for
    packet the same bytes at the same times; every frame keeps its (variable-rate) presentation
    time; the flash frame and the beep are as far apart as in the source (strength 0 keeps the
    picture, so the flash can be found again after the network and H.264)."""
    clip = _write_clip(tmp_path / "in.mp4", "aac")
    out = tmp_path / "out.mp4"
    stream = _stylize(clip.path, out, strength=0.0)
    assert stream.file_sink is not None
    assert stream.file_sink.audio_mode == "copy"

    types = _stream_types(out)
    assert len(types["video"]) == 1
    assert types["video"][0].startswith("video/x-h264")
    assert len(types["audio"]) == 1
    assert types["audio"][0].startswith("audio/mpeg")
    assert "mpegversion=(int)4" in types["audio"][0]

    source_times, source_light, _ = _video_frames(clip.path)
    times, light, size = _video_frames(out)
    assert size == (WIDTH, HEIGHT)
    assert len(times) == len(clip.frame_times)
    np.testing.assert_allclose(times, source_times, atol=1e-3)
    np.testing.assert_allclose(times, clip.frame_times, atol=1e-3)

    source_packets = _audio_packets(clip.path)
    packets = _audio_packets(out)
    assert packets == source_packets  # all of them: the whole source was written

    source_offset = _flash_time(source_times, source_light) - _beep_onset(clip.path)
    offset = _flash_time(times, light) - _beep_onset(out)
    assert _flash_time(times, light) == pytest.approx(clip.flash_seconds, abs=1e-3)
    assert offset == pytest.approx(source_offset, abs=1e-3)
    # the source itself: flash and beep one AAC packet apart at most (avenc_aac's priming delay
    # of 1024 samples, which GStreamer 1.22's mp4mux does not record as an edit)
    assert abs(offset) <= AAC_PACKET_SECONDS + 1e-3
    assert not list(tmp_path.glob(".*partial*"))


def test_stopping_early_cuts_the_audio_at_the_last_frame(tmp_path: Path) -> None:
    """With max_frames the audio ends with the video (to within one AAC packet), not with
    the source."""
    clip = _write_clip(tmp_path / "in.mp4", "aac")
    out = tmp_path / "out.mp4"
    _stylize(clip.path, out, max_frames=10)
    video_end = clip.frame_times[10]  # frame 9 lasts until frame 10 would start
    packets = _audio_packets(out)
    last_end = packets[-1][0] / Gst.SECOND + AAC_PACKET_SECONDS
    assert video_end - AAC_PACKET_SECONDS <= last_end <= video_end + 2 * AAC_PACKET_SECONDS
    assert len(_video_frames(out)[0]) == 10


def test_a_source_without_audio_gives_a_video_only_h264_file(tmp_path: Path) -> None:
    """No audio track in the source: the sink writes H.264 video alone."""
    clip = _write_clip(tmp_path / "in.mp4", None)
    out = tmp_path / "out.mp4"
    stream = _stylize(clip.path, out)
    assert stream.file_sink is not None
    assert stream.file_sink.audio_mode is None
    types = _stream_types(out)
    assert types["audio"] == []
    assert types["video"][0].startswith("video/x-h264")
    assert len(_video_frames(out)[0]) == len(clip.frame_times)


def test_audio_mp4_cannot_hold_is_reencoded_to_aac_in_sync(tmp_path: Path) -> None:
    """A Matroska source with Vorbis audio: mp4 cannot hold Vorbis, so the audio is decoded
    and re-encoded to AAC (said by ``audio_mode``), and still starts its beep at the flash."""
    clip = _write_clip(tmp_path / "in.mkv", "vorbis")
    out = tmp_path / "out.mp4"
    stream = _stylize(clip.path, out, strength=0.0)
    assert stream.file_sink is not None
    assert stream.file_sink.audio_mode == "aac"
    types = _stream_types(out)
    assert types["audio"][0].startswith("audio/mpeg")
    assert "mpegversion=(int)4" in types["audio"][0]
    times, light, _ = _video_frames(out)
    assert _beep_onset(out) == pytest.approx(_flash_time(times, light), abs=AAC_PACKET_SECONDS)


def test_mp3_audio_is_remuxed_unchanged(tmp_path: Path) -> None:
    """MP3 is a codec mp4 holds: its packets are copied as they are, not re-encoded."""
    clip = _write_clip(tmp_path / "in.mp4", "mp3")
    out = tmp_path / "out.mp4"
    stream = _stylize(clip.path, out)
    assert stream.file_sink is not None
    assert stream.file_sink.audio_mode == "copy"
    assert "mpegversion=(int)1" in _stream_types(out)["audio"][0]
    assert _audio_packets(out) == _audio_packets(clip.path)


COLOUR_BGR = (200, 60, 20)  # a blue: any channel mix-up or row misalignment shows


@pytest.mark.parametrize(
    ("width", "height", "written_size"),
    [
        (854, 480, (854, 480)),  # rows of 2562 bytes: not a multiple of 4
        (642, 360, (642, 360)),  # 1926 bytes
        (101, 75, (102, 76)),  # odd sides, padded to 306-byte rows
        (160, 96, (160, 96)),  # 480 bytes: aligned
    ],
)
def test_h264_sink_keeps_the_picture_at_any_row_size(
    tmp_path: Path, width: int, height: int, written_size: tuple[int, int]
) -> None:
    """Frames whose BGR rows are not a multiple of 4 bytes long (854x480, 642x360) or whose
    sides are odd (101x75, written as 102x76: 4:2:0 needs even sides) decode to the picture
    written: the colour of a plain frame, and its white last column, not green noise."""
    path = tmp_path / "sized.mp4"
    sink = H264FileSink(VideoFileSpec(path, 10.0, width, height))
    image = np.empty((height, width, 3), np.uint8)
    image[:] = COLOUR_BGR
    image[:, -1] = 255  # the last column must survive
    for index in range(3):
        assert sink.write(image, index / 10)
    sink.close()
    decoded = decoded_frames(path)
    assert len(decoded) == 3
    for frame in decoded:
        assert (frame.shape[1], frame.shape[0]) == written_size
        inner = frame[:height, : width - 2].reshape(-1, 3).astype(np.float64)
        np.testing.assert_allclose(inner.mean(axis=0), COLOUR_BGR, atol=6)
        assert float(frame[:height, width - 1].mean()) > 240


def test_h264_sink_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    """A frame of another size, an audio source that is not media, and a path that is not
    .mp4 are SinkErrors; a second close does nothing."""
    path = tmp_path / "odd.mp4"
    sink = H264FileSink(VideoFileSpec(path, 10.0, 101, 75))
    assert sink.write(np.zeros((75, 101, 3), np.uint8), 0.0)
    with pytest.raises(SinkError, match="frame is 100x75"):
        sink.write(np.zeros((75, 100, 3), np.uint8), 0.3)
    sink.close()
    sink.close()  # a second close does nothing
    assert len(_video_frames(path)[0]) == 1
    not_media = tmp_path / "notes.txt"
    not_media.write_text("not a video")
    with pytest.raises(SinkError, match="cannot read its audio"):
        H264FileSink(VideoFileSpec(tmp_path / "b.mp4", 10.0, 64, 64, audio_from=not_media))
    with pytest.raises(SinkError, match=r"\.mp4"):
        H264FileSink(VideoFileSpec(tmp_path / "c.avi", 10.0, 64, 64))


def test_close_after_a_writer_error_reports_it_without_waiting(tmp_path: Path) -> None:
    """mp4mux stages the media data in a hidden file beside the mp4; made a link to /dev/full,
    every write to it fails. The error reaches ``write`` as a SinkError, and ``close`` then
    raises that same error (no space left) at once, instead of waiting for an end of stream a
    failed pipeline never sends, and leaves no file behind."""
    path = tmp_path / "out.mp4"
    (tmp_path / ".out.partial.mdat").symlink_to("/dev/full")  # H264FileSink's staging file
    # a wait for the end of stream would end in "timed out" after these 5 s
    sink = H264FileSink(VideoFileSpec(path, 25.0, 320, 240), H264Settings(close_timeout_seconds=5))
    noise = np.random.default_rng(0)

    def write_noise() -> None:  # x264 fills mp4mux's few KiB of write buffer well within these
        for index in range(200):
            sink.write(noise.integers(0, 256, (240, 320, 3), dtype=np.uint8), index / 25)

    with pytest.raises(SinkError, match="No space left"):
        write_noise()
    with pytest.raises(SinkError, match=r"(?s)finishing the H.264 file failed: .*No space left"):
        sink.close()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """A 10 s clip (250 frames, AAC audio): the CPU stream needs well over 10 s for it."""
    frame_times = tuple(index * 0.04 for index in range(250))
    return _write_clip(tmp_path_factory.mktemp("long") / "in.mp4", "aac", frame_times)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_facestream_stylize_with_a_finished_mp4(
    tmp_path: Path, long_clip: Clip, signal_number: signal.Signals
) -> None:
    """SIGTERM or SIGINT (Ctrl-C) to a real `facestream stylize` writing an mp4 from a file: it
    finishes the frame in progress, completes the mp4 (playable, some frames, fewer than the
    source's) with the audio cut at the last frame, and exits with 128 + the signal number."""
    clip = long_clip
    out = tmp_path / "out.mp4"
    command = [sys.executable, "-m", "pipeline.cli.main", "stylize", "--source", str(clip.path)]
    process = subprocess.Popen(
        [*command, "--style", "udnie", "--out", str(out), "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        sink_open = threading.Event()
        log: list[str] = []

        def read_log() -> None:  # the file sink is opened on the first frame, and logs so
            assert process.stderr is not None
            for line in process.stderr:
                log.append(line)
                if "H.264 file sink" in line:
                    sink_open.set()

        reader = threading.Thread(target=read_log, name="stylize-log")
        reader.start()
        assert sink_open.wait(60), "".join(log)
        process.send_signal(signal_number)
        process.wait(timeout=60)
        reader.join(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal_number, "".join(log)
    assert f"stopped by {signal_number.name}" in "".join(log)
    times, _, size = _video_frames(out)
    assert size == (WIDTH, HEIGHT)
    assert 0 < len(times) < len(clip.frame_times)
    video_end = times[-1] + 0.04
    last_packet = _audio_packets(out)[-1][0] / Gst.SECOND
    assert last_packet <= video_end + 2 * AAC_PACKET_SECONDS  # the source's audio goes on
    assert not list(tmp_path.glob(".*partial*"))


def test_codec_and_audio_options_are_validated() -> None:
    """mpeg4 (OpenCV) cannot carry audio, so it needs out_audio 'none', and has no timestamps, so
    it takes file sources only; unknown values fail."""
    with pytest.raises(ValidationError, match="cannot carry audio"):
        StyleStreamConfig(source="in.mp4", style="udnie", out_file=Path("o.mp4"), out_codec="mpeg4")
    config = StyleStreamConfig(
        source="in.mp4", style="udnie", out_file=Path("o.mp4"), out_codec="mpeg4", out_audio="none"
    )
    assert (config.out_codec, config.out_audio) == ("mpeg4", "none")
    with pytest.raises(ValidationError, match="for file sources only"):
        StyleStreamConfig(
            source="rtsp://127.0.0.1:8554/cam",
            style="udnie",
            out_file=Path("o.mp4"),
            out_codec="mpeg4",
            out_audio="none",
        )
    StyleStreamConfig(  # without a file the codec writes nothing: no reason to refuse
        source="rtsp://127.0.0.1:8554/cam",
        style="udnie",
        mjpeg_port=0,
        out_codec="mpeg4",
        out_audio="none",
    )
    with pytest.raises(ValidationError):
        StyleStreamConfig.model_validate(
            {"source": "in.mp4", "style": "udnie", "out_file": "o.mp4", "out_codec": "h265"}
        )


def test_cli_writes_h264_with_audio_on_the_torch_backend(tmp_path: Path) -> None:
    """`facestream style stylize --backend torch --out o.mp4` writes H.264 with the source's
    audio; `--out-codec mpeg4` without `--out-audio none` ends with status 1 and one line."""
    pytest.importorskip("torch", reason="the torch backend needs the [torch] extra")
    from typer.testing import CliRunner  # noqa: PLC0415

    from pipeline.style.cli import style_app  # noqa: PLC0415

    clip = _write_clip(tmp_path / "in.mp4", "aac")
    out = tmp_path / "out.mp4"
    runner = CliRunner()
    common = ["stylize", "--source", str(clip.path), "--style", "udnie", "--out", str(out)]
    result = runner.invoke(style_app, [*common, "--backend", "torch", "--max-frames", "3"])
    assert result.exit_code == 0, result.output
    types = _stream_types(out)
    assert types["video"][0].startswith("video/x-h264")
    assert len(types["audio"]) == 1
    assert len(_video_frames(out)[0]) == 3
    result = runner.invoke(style_app, [*common, "--out-codec", "mpeg4"])
    assert result.exit_code == 1
    assert "cannot carry audio" in result.output
    result = runner.invoke(style_app, [*common, "--out-codec", "mpeg4", "--out-audio", "none"])
    assert result.exit_code == 0, result.output
    assert _stream_types(out)["audio"] == []
