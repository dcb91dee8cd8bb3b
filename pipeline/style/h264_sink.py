"""An mp4 file sink with H.264 video (GStreamer's x264enc) that carries the source's audio over.

Pipeline (GStreamer 1.22 from Debian, through PyGObject)::

    appsrc (BGRx, our timestamps) ! videoconvert ! I420 ! x264enc ! h264parse ! mp4mux ! filesink
    filesrc (the source file) ! parsebin ! first audio track ! queue ! [aacparse] ! mp4mux

Audio: the first audio track of ``audio_from`` (the source file) is *remuxed*, packet for packet,
when MP4 can hold its codec (AAC, MP3, AC-3, ALAC, Opus); any other codec (Vorbis, PCM, ...) is
decoded and re-encoded to AAC (``avenc_aac``, gstreamer1.0-libav). ``audio_mode`` says which
happened ("copy", "aac" or None for no audio). Audio and video share the source's timeline:
the video frames carry the source's presentation times (``write(image, pts_seconds)``) and
the audio packets keep theirs, so they stay in sync. The whole audio track is kept when the
whole source was written; when the video stops before the source ends (``max_frames``,
``stop()``: the stream calls ``cut_audio_at_last_frame``), the audio is cut at the end of the
last frame (to within one audio packet, ~21 ms for AAC at 48 kHz).

x264 runs without B-frames, so every frame's decode time is its presentation time: with B-frames
mp4mux measured the track by decode times and cut the last frame of a variable-rate stream (seen
here with GStreamer 1.22), and a real-time stream gains nothing from the extra latency. The video
track counts time in 1/90000 s, whatever the frame rate.

Like the other sinks, everything that can fail at start fails in the constructor (no GStreamer,
no x264enc, an unwritable folder, an unreadable audio source): BackendUnavailableError or
SinkError. The file is written under a temporary name and renamed into place by ``close``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from engines.errors import BackendUnavailableError
from pipeline.capture.gstreamer_source import require_gstreamer
from pipeline.style.errors import SinkError

__all__ = [
    "AudioMode",
    "H264FileSink",
    "H264Settings",
    "VideoFileSpec",
    "pad_to_even",
    "to_gst_bgrx",
]

_log = logging.getLogger(__name__)
AudioMode = Literal["copy", "aac"]
_DISCOVER_SECONDS = 10
_MAX_QUEUED_FRAMES = 8  # raw frames waiting for the encoder before ``write`` waits
_VIDEO_TIMESCALE = 90_000  # the usual video clock; mp4mux would derive one from the rate
_AAC_CAPS = "audio/mpeg"  # MPEG-2/4 AAC: aacparse turns ADTS/LOAS into the raw form mp4 holds


@dataclass(frozen=True, slots=True)
class VideoFileSpec:
    """What to write: the mp4 path, the nominal frame rate and frame size, and the media file
    whose first audio track is carried over (None: no audio)."""

    path: Path
    fps: float
    width_px: int
    height_px: int
    audio_from: Path | None = None


@dataclass(frozen=True, slots=True)
class H264Settings:
    """x264 settings. quality: x264's constant-quality quantizer (lower is better, 18-23 is the
    usual range); keyframe_seconds: at most this long between keyframes (seeking)."""

    speed_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = (
        "veryfast"
    )
    quality: int = 20
    keyframe_seconds: float = 2.0
    close_timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.quality <= 50 or self.keyframe_seconds <= 0:
            raise ValueError(
                f"x264 quality must be in 0..50 and keyframe_seconds > 0, got {self.quality} "
                f"and {self.keyframe_seconds}"
            )


def pad_to_even(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Repeat the last column/row once where a side is odd (4:2:0 chroma needs even sides)."""
    height, width = image.shape[:2]
    if width % 2 == 0 and height % 2 == 0:
        return image
    padded = cv2.copyMakeBorder(image, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)
    return np.asarray(padded, dtype=np.uint8)


def to_gst_bgrx(image: npt.NDArray[np.uint8]) -> bytes:
    """A BGR uint8 (H, W, 3) frame as the bytes of a GStreamer ``video/x-raw,format=BGRx``
    buffer.

    GStreamer rounds each row of packed BGR up to a multiple of 4 bytes: rows of width * 3
    bytes, pushed as they are, turn every frame whose width * 3 is not a multiple of 4 (854,
    642, 101 px) into green noise. BGRx rows are width * 4 bytes, always aligned.
    """
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA), dtype=np.uint8).tobytes()


def _import_gst() -> tuple[Any, Any]:
    """``Gst`` (initialised) and ``GstPbutils``; BackendUnavailableError without them.

    Goes through ``require_gstreamer``, which puts libgcc_s's C++ unwinder in front before
    GStreamer loads libunwind (otherwise torch's ONNX export and dlib abort on their first C++
    exception in this process).
    """
    try:
        gst, _ = require_gstreamer()
        import gi  # noqa: PLC0415  (optional: GStreamer through PyGObject)

        gi.require_version("GstPbutils", "1.0")
        from gi.repository import GstPbutils  # noqa: PLC0415
    except (BackendUnavailableError, ImportError, ValueError) as exc:
        raise BackendUnavailableError(
            f"the H.264 file sink needs PyGObject and GStreamer (facestream[gstreamer]): {exc}; "
            "or choose out_codec 'mpeg4'"
        ) from exc
    return gst, GstPbutils


def _require_elements(gst: Any, names: dict[str, str]) -> None:
    missing = [
        f"{name} ({package})"
        for name, package in names.items()
        if not gst.ElementFactory.find(name)
    ]
    if missing:
        raise BackendUnavailableError(f"the H.264 file sink needs GStreamer's {', '.join(missing)}")


def first_audio_caps(path: Path) -> Any | None:
    """The caps of the first audio track of the media file ``path``, None when it has none;
    SinkError when GStreamer cannot read the file."""
    gst, pbutils = _import_gst()
    try:
        discoverer = pbutils.Discoverer.new(_DISCOVER_SECONDS * gst.SECOND)
        info = discoverer.discover_uri(path.resolve().as_uri())
    except Exception as exc:  # GLib.Error: not a media file, unreadable, timeout
        raise SinkError(f"{path}: GStreamer cannot read its audio: {exc}") from exc
    streams = info.get_audio_streams()
    return streams[0].get_caps() if streams else None


def _is_aac(structure: Any) -> bool:
    """MPEG-2/4 AAC (as opposed to MPEG-1 layer 1-3 under the same media type)."""
    return bool(structure.get_name() == _AAC_CAPS and structure.get_int("mpegversion")[1] in (2, 4))


def audio_mode_for(caps: Any) -> AudioMode:
    """ "copy" when mp4mux can hold this audio codec as it is, else "aac" (re-encode)."""
    gst, _ = _import_gst()
    if _is_aac(caps.get_structure(0)):
        return "copy"
    factory = gst.ElementFactory.find("mp4mux")
    for template in factory.get_static_pad_templates():
        if template.name_template.startswith("audio_"):
            return "copy" if caps.can_intersect(template.get_caps()) else "aac"
    return "aac"


class H264FileSink:
    """H.264 video in an mp4 (x264enc through GStreamer), with the source's audio carried over.

    ``write`` takes BGR uint8 frames of ``spec``'s size with their presentation time in seconds
    (increasing; a time that does not increase is replaced by the previous one plus one frame).
    Odd sides are padded by one repeated column/row, as H.264's 4:2:0 needs even sides.
    """

    name = "file"

    def __init__(self, spec: VideoFileSpec, settings: H264Settings | None = None) -> None:
        settings = settings if settings is not None else H264Settings()
        _check_spec(spec)
        gst, _ = _import_gst()
        _require_elements(
            gst,
            {
                "x264enc": "gstreamer1.0-plugins-ugly",
                "h264parse": "gstreamer1.0-plugins-bad",
                "mp4mux": "gstreamer1.0-plugins-good",
                "appsrc": "gstreamer1.0-plugins-base",
            },
        )
        self._gst = gst
        self._settings = settings
        self.path = spec.path
        self.audio_mode: AudioMode | None = None
        self._audio_kind = ""  # the media type of the track to carry: parsebin's pads by it
        self._audio_is_aac = False
        audio_caps = None if spec.audio_from is None else self._plan_audio(spec.audio_from)
        self._partial = spec.path.with_name(f".{spec.path.stem}.partial.mp4")
        # mp4mux's faststart (index at the front, for browsers) stages the media data here
        self._staging = spec.path.with_name(f".{spec.path.stem}.partial.mdat")
        try:
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            self._partial.touch()
        except OSError as exc:
            raise SinkError(f"{spec.path}: cannot write there: {exc.strerror}") from exc
        self._size = (spec.width_px, spec.height_px)
        self.padded_size = (spec.width_px + spec.width_px % 2, spec.height_px + spec.height_px % 2)
        self._frame_ns = round(gst.SECOND / spec.fps)
        self._audio_end_ns: int | None = None  # audio from here on is cut
        self._cut_requested = False
        self._audio_cut = threading.Event()
        self._last_pts_ns = -1
        self._frames = 0
        self._failure: str | None = None  # the writer's error, once seen on the bus
        self._closed = False
        self._start(
            self._launch_line(spec, settings, audio_from=spec.audio_from if audio_caps else None)
        )
        _log.info(
            "H.264 file sink %s (%dx%d, audio %s)",
            spec.path,
            *self.padded_size,
            self.audio_mode or "none",
        )

    def _plan_audio(self, audio_from: Path) -> Any | None:
        """Find the source's first audio track and choose copy or AAC; its caps, or None."""
        caps = first_audio_caps(audio_from)
        if caps is None:
            return None
        self.audio_mode = audio_mode_for(caps)
        structure = caps.get_structure(0)
        self._audio_kind = str(structure.get_name())
        self._audio_is_aac = _is_aac(structure)
        needs = {"parsebin": "gstreamer1.0-plugins-base", "aacparse": "gstreamer1.0-plugins-good"}
        if self.audio_mode == "aac":
            needs["avenc_aac"] = "gstreamer1.0-libav"
        _require_elements(self._gst, needs)
        return caps

    def _start(self, line: str) -> None:
        """Build the pipeline from its launch line and set it playing; SinkError otherwise."""
        gst = self._gst
        try:
            self._pipeline = gst.parse_launch(line)
        except Exception as exc:  # GLib.Error: an element or property GStreamer lacks
            self._remove_partial()
            raise SinkError(f"{self.path}: GStreamer cannot build the writer: {exc}") from exc
        self._appsrc = self._pipeline.get_by_name("video")
        for pad in self._pipeline.get_by_name("mux").sinkpads:
            if pad.get_name().startswith("video_"):  # frame times to 1/90000 s, any frame rate
                pad.set_property("trak-timescale", _VIDEO_TIMESCALE)
        if self.audio_mode is not None:
            self._link_audio()
        self._bus = self._pipeline.get_bus()
        if self._pipeline.set_state(gst.State.PLAYING) == gst.StateChangeReturn.FAILURE:
            error = self._bus_error()
            self._pipeline.set_state(gst.State.NULL)
            self._remove_partial()
            raise SinkError(f"{self.path}: GStreamer cannot start the writer: {error}")

    def _launch_line(
        self, spec: VideoFileSpec, settings: H264Settings, *, audio_from: Path | None
    ) -> str:
        numerator, denominator = self._gst.util_double_to_fraction(spec.fps)
        width, height = self.padded_size
        caps = (
            f"video/x-raw,format=BGRx,width={width},height={height},"
            f"framerate={numerator}/{denominator}"
        )
        keyframes = max(1, round(spec.fps * settings.keyframe_seconds))
        location = _gst_quote(str(self._partial))
        line = (
            f'appsrc name=video format=time is-live=false block=false caps="{caps}" '
            "! videoconvert ! video/x-raw,format=I420 "
            f"! x264enc speed-preset={settings.speed_preset} pass=qual "
            f"quantizer={settings.quality} key-int-max={keyframes} bframes=0 "
            "! h264parse ! queue ! mp4mux name=mux faststart=true "
            f"faststart-file={_gst_quote(str(self._staging))} "
            f"! filesink location={location} "
        )
        if audio_from is None:
            return line
        if self.audio_mode == "aac":  # re-encode what mp4 cannot hold
            branch = "decodebin ! audioconvert ! audioresample ! avenc_aac ! aacparse"
        elif self._audio_kind == _AAC_CAPS and self._audio_is_aac:
            branch = "aacparse"  # ADTS/LOAS AAC becomes the raw form mp4 holds; raw passes
        else:
            branch = "identity"  # MP3, AC-3, ALAC, Opus: already parsed by parsebin
        return line + (
            f"filesrc location={_gst_quote(str(audio_from))} ! parsebin name=demux "
            "queue name=audio max-size-time=0 max-size-bytes=0 max-size-buffers=200 "
            f"! {branch} name=audioout ! mux.audio_0 "
        )

    def _link_audio(self) -> None:
        """Link the first audio pad parsebin exposes to the audio branch; cut at ``close``."""
        demux = self._pipeline.get_by_name("demux")
        queue_sink = self._pipeline.get_by_name("audio").get_static_pad("sink")
        linked = threading.Lock()

        def on_pad(_element: Any, pad: Any) -> None:
            caps = pad.get_current_caps() or pad.query_caps(None)
            if caps.get_structure(0).get_name() != self._audio_kind:
                return  # other tracks stay unlinked: the demuxer skips them
            with linked:
                if queue_sink.is_linked():
                    return
                if pad.link(queue_sink) != self._gst.PadLinkReturn.OK:
                    _log.warning("%s: could not link the source's audio track", self.path)

        def on_no_more_pads(_element: Any) -> None:
            if not queue_sink.is_linked():  # no usable audio after all: end the audio branch
                queue_sink.send_event(self._gst.Event.new_eos())

        demux.connect("pad-added", on_pad)
        demux.connect("no-more-pads", on_no_more_pads)
        out_pad = self._pipeline.get_by_name("audioout").get_static_pad("src")
        out_pad.add_probe(self._gst.PadProbeType.BUFFER, self._cut_audio)

    def _cut_audio(self, pad: Any, info: Any) -> Any:
        """Drop audio after the last video frame (known once ``close`` starts) and end it."""
        end = self._audio_end_ns
        buffer = info.get_buffer()
        if end is None or buffer is None or buffer.pts == self._gst.CLOCK_TIME_NONE:
            return self._gst.PadProbeReturn.OK
        if buffer.pts < end:
            return self._gst.PadProbeReturn.OK
        if not self._audio_cut.is_set():
            self._audio_cut.set()
            pad.push_event(self._gst.Event.new_eos())
        return self._gst.PadProbeReturn.DROP

    def _bus_error(self) -> str | None:
        """The writer's error, if it posted one; kept, as popping takes it off the bus."""
        message = self._bus.pop_filtered(self._gst.MessageType.ERROR)
        if message is not None:
            error, debug = message.parse_error()
            if self._failure is None:  # the first error is the cause; later ones follow from it
                self._failure = f"{error.message} ({debug})" if debug else str(error.message)
        return self._failure

    def write(self, image: npt.NDArray[np.uint8], pts_seconds: float) -> bool:
        """Queue one frame for the encoder; SinkError when the writer failed or stalled."""
        if self._closed:
            raise SinkError(f"{self.path}: the file sink is closed")
        if (image.shape[1], image.shape[0]) != self._size:
            raise SinkError(
                f"{self.path}: frame is {image.shape[1]}x{image.shape[0]}, the file is "
                f"{self._size[0]}x{self._size[1]}"
            )
        self._wait_for_room()
        pts_ns = round(pts_seconds * self._gst.SECOND)
        if pts_ns <= self._last_pts_ns:
            pts_ns = self._last_pts_ns + self._frame_ns
        self._last_pts_ns = pts_ns
        buffer = self._gst.Buffer.new_wrapped(to_gst_bgrx(pad_to_even(image)))
        buffer.pts = pts_ns
        buffer.dts = pts_ns
        buffer.duration = self._frame_ns
        result = self._appsrc.emit("push-buffer", buffer)
        if result != self._gst.FlowReturn.OK:
            raise SinkError(
                f"{self.path}: the writer refused a frame ({result.value_nick}): "
                f"{self._bus_error()}"
            )
        self._frames += 1
        return True

    def _wait_for_room(self) -> None:
        """Wait while the encoder is behind; SinkError on a writer error or a 30 s stall."""
        deadline = time.monotonic() + 30.0
        while True:
            error = self._bus_error()
            if error is not None:
                raise SinkError(f"{self.path}: the H.264 writer failed: {error}")
            if self._appsrc.get_property("current-level-buffers") < _MAX_QUEUED_FRAMES:
                return
            if time.monotonic() > deadline:
                raise SinkError(f"{self.path}: the H.264 writer took no frame for 30 s")
            time.sleep(0.005)

    def _remove_partial(self) -> None:
        self._partial.unlink(missing_ok=True)
        self._staging.unlink(missing_ok=True)

    def cut_audio_at_last_frame(self) -> None:
        """At ``close``, end the audio where the last written frame ends (the video stopped
        before the source did); without this call the source's whole audio track is kept."""
        self._cut_requested = True

    def close(self) -> None:
        """End the stream, wait for the file to be finished, move it into place (an empty one
        is removed). SinkError when the writer fails or does not finish in time."""
        if self._closed:
            return
        self._closed = True
        gst = self._gst
        if not self._frames or self._bus_error() is not None:  # nothing to finish: no file
            self._pipeline.set_state(gst.State.NULL)
            self._remove_partial()
            if self._failure is not None:  # a failed pipeline never posts EOS: do not wait
                raise SinkError(f"{self.path}: finishing the H.264 file failed: {self._failure}")
            return
        if self._cut_requested:
            self._audio_end_ns = self._last_pts_ns + self._frame_ns
        self._appsrc.emit("end-of-stream")
        timeout_ns = round(self._settings.close_timeout_seconds * gst.SECOND)
        message = self._bus.timed_pop_filtered(
            timeout_ns, gst.MessageType.EOS | gst.MessageType.ERROR
        )
        self._pipeline.set_state(gst.State.NULL)
        if message is None or message.type == gst.MessageType.ERROR:
            self._remove_partial()
            detail = "timed out" if message is None else str(message.parse_error()[0].message)
            raise SinkError(f"{self.path}: finishing the H.264 file failed: {detail}")
        self._partial.replace(self.path)
        _log.info("wrote %s: %d frames, audio %s", self.path, self._frames, self.audio_mode)


def _check_spec(spec: VideoFileSpec) -> None:
    if spec.path.suffix.lower() != ".mp4":
        raise SinkError(f"{spec.path}: the file sink writes .mp4 files")
    if spec.fps <= 0 or spec.width_px <= 0 or spec.height_px <= 0:
        raise SinkError(
            f"{spec.path}: need fps and size > 0, got {spec.fps} fps "
            f"{spec.width_px}x{spec.height_px}"
        )


def _gst_quote(text: str) -> str:
    """``text`` as a quoted gst-launch property value."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
