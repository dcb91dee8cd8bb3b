"""Face detectors: one module per detector, the factory that builds the configured one,
and the searches a still image gets when one pass finds no face.

Modules and their public names:

- ``blazeface``: BlazeFace face detection through an engines ``Engine``, with dlib 5-point
  landmarks. Public: ``BlazeFaceConfig``, ``BlazeFaceDetector``, ``StillFallbackConfig``.
- ``blazeface_decode``: BlazeFace's network input and output: the letterbox, the SSD anchors,
  the decoding of the raw outputs and MediaPipe's weighted NMS. Public: ``ANCHOR_SPECS``,
  ``KEYPOINT_COUNT``, ``AnchorSpec``, ``Detections``, ``Letterbox``, ``decode_detections``,
  ``letterbox``, ``ssd_anchor_centres``, ``weighted_nms``.
- ``factory``: Face detection with 5-point landmarks: the detector choices and the factory that
  builds one. Public: ``BlazeFaceConfig``, ``BlazeFaceDetector``, ``DetectConfig``,
  ``DlibHogConfig``, ``DlibHogDetector``, ``StillFallbackConfig``, ``load_detector``.
- ``still``: The views a still image is searched in when one pass of the detector finds no face
  in it. Public: ``CHIP_FORMATS``, ``ChipFormat``, ``View``, ``chip_format``,
  ``normalise_contrast``, ``padded_view``, ``shrunk_view``, ``still_tiles``.
"""
