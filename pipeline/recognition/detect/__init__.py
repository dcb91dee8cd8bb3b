"""Face detectors: one module per detector, the factory that builds the configured one,
and the searches a still image gets when one pass finds no face.

Modules and their public names:

- ``blazeface``: BlazeFace face detection through an engines ``Engine``, with dlib 5-point
  landmarks. Public: ``ANCHOR_SPECS``, ``AnchorSpec``, ``BlazeFaceConfig``,
  ``BlazeFaceDetector``, ``Detections``, ``Letterbox``, ``StillFallbackConfig``,
  ``decode_detections``, ``letterbox``, ``normalise_contrast``, ``ssd_anchor_centres``,
  ``still_tiles``, ``weighted_nms``.
- ``factory``: Face detection with 5-point landmarks: the detector choices and the factory that
  builds one. Public: ``BlazeFaceConfig``, ``BlazeFaceDetector``, ``DetectConfig``,
  ``DlibHogConfig``, ``DlibHogDetector``, ``StillFallbackConfig``, ``load_detector``.
- ``still``: The views a still image is searched in when one pass of the detector finds no face
  in it. Public: ``CHIP_FORMATS``, ``ChipFormat``, ``View``, ``chip_format``, ``padded_view``,
  ``shrunk_view``.
"""
