"""Photos sent to the API, read within the upload caps and analysed one request at a time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from fastapi import UploadFile

from pipeline.errors import EnrollmentRejectedError, ImageDecodeError
from pipeline.images import decode_image
from pipeline.service.app import EnrolmentTemplates
from pipeline.service.http.state import ApiState
from pipeline.types import Embeddings, FoundBy

__all__ = ["Probe", "TooLargeError", "largest_face", "read_upload", "templates"]


class TooLargeError(ImageDecodeError):
    """An upload over ``api.max_upload_bytes`` or ``api.max_request_pixels`` (413)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """The largest face of an upload as one embedding (1, 128), and the search that found it."""

    embedding: Embeddings
    found_by: FoundBy


def read_upload(state: ApiState, upload: UploadFile) -> npt.NDArray[np.uint8]:
    """The upload as RGB; TooLargeError past ``api.max_upload_bytes``."""
    limit = state.service.config.api.max_upload_bytes
    name = upload.filename or "upload"
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise TooLargeError(f"{name}: larger than the {limit} bytes allowed (api.max_upload_bytes)")
    return decode_image(data, name=name)


def largest_face(state: ApiState, upload: UploadFile) -> Probe:
    """The largest face of the upload; EnrollmentRejectedError (no_face) when there is none."""
    rgb = read_upload(state, upload)
    with state.analysis_lock:
        analyzed = state.service.services.analyzer.analyze(rgb)
    if not len(analyzed):
        raise EnrollmentRejectedError("no_face", f"{upload.filename or 'image'}: no face found")
    vector = Embeddings(analyzed.embeddings.vectors[:1], model_id=analyzed.embeddings.model_id)
    return Probe(vector, analyzed.faces.found_by)


def templates(state: ApiState, images: list[UploadFile]) -> EnrolmentTemplates:
    """Enrolment templates of the photos (those refused listed); EnrollmentRejectedError when
    none can be used, TooLargeError past ``api.max_request_pixels`` together."""
    api = state.service.config.api
    if len(images) > api.max_images_per_request:
        raise ImageDecodeError(
            f"{len(images)} images; at most {api.max_images_per_request} per request"
        )
    total_pixels = 0
    decoded: list[tuple[str, npt.NDArray[np.uint8]]] = []
    for number, upload in enumerate(images, start=1):
        name = upload.filename or f"image {number}"
        rgb = read_upload(state, upload)
        total_pixels += rgb.shape[0] * rgb.shape[1]
        if total_pixels > api.max_request_pixels:  # all are held until analysed: bound memory
            raise TooLargeError(
                f"{name}: the images up to this one have {total_pixels} pixels together, more "
                f"than the {api.max_request_pixels} one request may have "
                "(api.max_request_pixels); send fewer or smaller photos"
            )
        decoded.append((name, rgb))
    with state.analysis_lock:
        found = state.service.services.enrolment_templates(decoded)
    if not len(found.templates):
        raise EnrollmentRejectedError(
            "no_usable_photo", "none of the images can be enrolled: " + "; ".join(found.rejected)
        )
    return found
