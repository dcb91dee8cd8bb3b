"""Recognition: what a camera's frames go through, from detection to the gallery's
answer: ``camera`` holds one camera's state and steps, ``live`` schedules the cameras and
batches their encodes, ``offline`` runs a recording; and the checks of enrolment photos.

Modules and their public names:

- ``align``: Face alignment: 5 landmarks -> 150x150 RGB chips with the geometry of dlib's
  get_face_chip. Public: ``CHIP_PADDING``, ``FaceAligner``.
- ``analyzer``: One image -> its faces, aligned chips and embeddings: detect, align, encode in
  order. Public: ``AnalyzedFaces``, ``FaceAnalyzer``, ``FaceDetector``.
- ``camera``: One camera's recognition: everything the frames of one camera go through, in one
  object. Public: ``CameraRecognizer``, ``RecognitionParts``.
- ``encode``: The encode stage: aligned chips -> embeddings, batched into as few engine calls as
  possible. Public: ``FaceEncoder``.
- ``enroll``: Enrolment checks: one usable face per photo, or a clear reason why not. Public:
  ``EnrollConfig``, ``EnrolledFace``, ``chip_sharpness``, ``enrollment_template``.
- ``live``: Live recognition: frames from every camera's queue through one recognition worker.
  Public: ``UNHEALTHY_AFTER_SECONDS``, ``CameraTrack``, ``LiveOutputs``, ``LiveRecognition``.
- ``offline``: Offline processing of a recording with the live pipeline's stages. Public:
  ``MatchConfig``, ``ObservedFrame``, ``RecognitionConfig``, ``ProcessSummary``,
  ``RecordingProcessor``, ``StreamRecognizer``, ``identify_batch``, ``track_consensus``,
  ``track_result``.
- ``quality``: Face quality (eye distance, sharpness, pose, exposure, detector score), measured
  once per encoded face where its chip is aligned. Public: ``face_quality``.
- ``track``: Follow faces across frames so each person is encoded a few times, not on every
  frame. Public: ``FaceTracker``, ``Track``, ``TrackConfig``, ``TrackUpdate``, ``box_iou``,
  ``face_qualities``.
"""
