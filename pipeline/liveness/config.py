"""The ``liveness`` config section: which cues run, how often, how they are weighed, and the
score thresholds of the verdict. Defaults were tuned (``python -m calibration.tune_liveness``)
on the tune split of the synthetic evaluation only: real face-track windows against synthetic
prints and replays (docs/liveness.md); calibrate on your own door's captures before relying
on them."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.config.base import StrictModel

__all__ = ["LivenessConfig"]


class LivenessConfig(StrictModel):
    """Per-track liveness: evidence from several cues over a window of frames, fused into a
    score (P(live)-like, 0..1) and a verdict (live / spoof / undecided)."""

    enabled: bool = Field(
        default=True,
        description="judge liveness (on by default: every door requires it unless its section "
        "says require_liveness = false); when on, such a door needs a 'live' verdict to open",
    )
    window_frames: int = Field(
        default=30,
        ge=4,
        le=1000,
        description="frames of evidence kept per track (30 = 2 s at 15 fps); older is forgotten",
    )
    min_frames: int = Field(
        default=9,
        ge=1,
        le=1000,
        description="frames a track needs before it gets any verdict other than 'undecided' "
        "(9 = 0.6 s at 15 fps: a track's first parallax and surround measurements come at 6)",
    )
    live_threshold: float = Field(
        default=0.6,
        gt=0.5,
        lt=1.0,
        description="fused score at or above which a track is 'live' (if motion was measured); "
        "above 0.5, the score of no evidence",
    )
    spoof_threshold: float = Field(
        default=0.3,
        gt=0.0,
        lt=0.5,
        description="fused score at or below which a track is 'spoof'; below 0.5",
    )
    require_motion_for_live: bool = Field(
        default=True,
        description="'live' needs a parallax measurement (the face moved enough, beyond a "
        "shift, turn or scale, for its 3-D shape to be measured; the parallax cue's answer is "
        "then weighed with the others) or the still-person path's evidence (still_live); a "
        "face that shows neither stays 'undecided'",
    )
    live_min_cnn: float = Field(
        default=0.5,
        ge=0.0,
        lt=1.0,
        description="'live' (on either path) needs the CNN cue, when on, at or above this: a "
        "replay of a moving head shows real parallax, and on the second attack generator's "
        "static screens the CNN (0.02-0.1) was outvoted; real windows stayed >= 0.59 "
        "(docs/liveness.md)",
    )
    live_min_cnn_scores: int = Field(
        default=2,
        ge=1,
        le=20,
        description="'live' (on either path) waits for this many CNN scores of the track "
        "when the CNN is on (one every cnn_every_frames frames), so its veto has evidence: "
        "with one score, screens replaying a moving head on the second attack generator were "
        "decided live at frames 9-10 by parallax; 2 halved those (33 % -> 17 %) at no BPCER "
        "cost, 3 cost a real window (docs/liveness.md)",
    )
    still_live: bool = Field(
        default=True,
        description="a face that never moves in 3-D may still be 'live' on strong, sustained "
        "evidence: every one of its last still_live_cnn_scores CNN scores at least "
        "still_live_min_cnn, a median face width of at least still_live_min_face_px, and "
        "non-rigid motion (talking, blinking, expression) or a blink; a print or a frozen "
        "screen shows no non-rigid motion (docs/liveness.md)",
    )
    still_live_min_cnn: float = Field(
        default=0.85,
        gt=0.5,
        le=1.0,
        description="the lowest CNN P(real) among the latest still_live_cnn_scores scores",
    )
    still_live_cnn_scores: int = Field(
        default=3,
        ge=1,
        le=30,
        description="CNN scores that must all be high (the CNN scores a track every "
        "cnn_every_frames frames: 3 scores at 10 = a track's 21st frame, 1.4 s at 15 fps)",
    )
    still_live_min_face_px: float = Field(
        default=32.0,
        ge=24.0,
        le=4096.0,
        description="median face width (pixels) over the window below which the still-person "
        "path is closed: under ~30 px the CNN's 2.7x crop is narrower than its 80-px input "
        "and is upsampled, so its scores carry less detail",
    )
    still_live_nonrigid_residual: float = Field(
        default=0.006,
        gt=0.0,
        lt=1.0,
        description="a parallax measurement shows non-rigid motion when the 90th percentile of "
        "its homography residuals reaches this fraction of the face width",
    )
    still_live_nonrigid_frames: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="measurements with non-rigid motion needed in the window (a blink also "
        "suffices when the blink cue is on)",
    )
    max_blockiness: float = Field(
        default=1.6,
        gt=1.0,
        le=10.0,
        description="compression-block artefacts (step across the 8-px grid over the step "
        "elsewhere; 1.0-1.2 for the H.264 test clips, 1.4-1.8 at JPEG quality 30, 3-4 at "
        "quality 5) above which motion is not trusted as 3-D evidence, so a heavily "
        "compressed stream cannot look live",
    )
    analysis_width_px: int = Field(
        default=128,
        ge=48,
        le=512,
        description="faces are resampled to about this width (pixels) for point tracking",
    )
    parallax_span_frames: int = Field(
        default=5,
        ge=1,
        le=100,
        description="frames between the two point sets a homography is fitted to",
    )
    parallax_min_points: int = Field(
        default=12, ge=6, le=500, description="tracked points needed for a parallax measurement"
    )
    parallax_min_motion: float = Field(
        default=0.012,
        gt=0.0,
        lt=1.0,
        description="a measurement counts only when a similarity transform (shift, turn, "
        "scale) misses the points by at least this fraction of the face width (median)",
    )
    parallax_planar_ratio: float = Field(
        default=0.55,
        gt=0.0,
        lt=1.0,
        description="homography residual / similarity residual at which parallax is neutral; "
        "a plane (photo, screen) scores well below, a turning head above",
    )
    parallax_weight: float = Field(
        default=1.6, ge=0.0, le=10.0, description="weight of the parallax cue's log-odds"
    )
    surround: bool = Field(
        default=True,
        description="surround-motion cue: spoof evidence when the scene around the face moves "
        "as one rigid object (a hand-held photo or phone) while the frame's border stays still",
    )
    surround_every_frames: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="the surround cue measures on every this many frames of a track that has a "
        "parallax measurement (~1.5 ms per face on one CPU core each time; 2 halves that but "
        "let one more held-out replay through, docs/liveness.md)",
    )
    surround_weight: float = Field(
        default=2.0, ge=0.0, le=10.0, description="weight of the surround cue's log-odds"
    )
    texture: bool = Field(
        default=True,
        description="use the texture/colour and flicker cues (the texture model is fitted on "
        "synthetic attacks only, see docs/liveness.md)",
    )
    texture_every_frames: int = Field(
        default=2, ge=1, le=1000, description="texture features are computed this often"
    )
    texture_weight: float = Field(
        default=0.5, ge=0.0, le=10.0, description="weight of the texture cue's log-odds"
    )
    flicker_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=10.0,
        description="weight of the brightness-flicker cue (screens beat against the camera); 0 "
        "by default: stage lighting and camera motion made real clips flicker as much",
    )
    cnn: bool = Field(
        default=True,
        description="score crops with the MiniFASNet anti-spoofing CNN (needs its engine)",
    )
    cnn_every_frames: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="the CNN scores a track on its first frame and then this often (it costs "
        "~20 ms per face on one CPU core)",
    )
    cnn_weight: float = Field(
        default=1.0, ge=0.0, le=10.0, description="weight of the CNN cue's log-odds"
    )
    blink: bool = Field(
        default=False,
        description="eye-blink cue from dlib's 68-point predictor (trained on iBUG 300-W, "
        "non-commercial licence: off by default; needs face_recognition_models)",
    )
    blink_weight: float = Field(
        default=0.5, ge=0.0, le=10.0, description="weight of the blink cue's log-odds"
    )

    @model_validator(mode="after")
    def _windows_ordered(self) -> LivenessConfig:
        if self.min_frames > self.window_frames:
            raise ValueError(
                f"min_frames ({self.min_frames}) cannot exceed window_frames ({self.window_frames})"
            )
        return self
