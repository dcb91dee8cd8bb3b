"""The face gallery: identities and their templates in Redis, searched in memory.

Modules and their public names:

- ``model``: The gallery's own data types: an identity, an enrolment, a re-encoding's result.
  Public: ``DEFAULT_GALLERY``, ``GALLERY_NAME``, ``Enrollment``, ``Identity``,
  ``MetadataValue``, ``ReencodeResult``, ``check_gallery_names``, ``check_identity_id``,
  ``check_vectors``.
- ``index``: The in-memory index: an exact nearest-neighbour search over face templates, used
  by ``store`` only. Public: ``IndexEntry``, ``TemplateIndex``, ``VECTOR_BYTES``,
  ``VECTOR_DTYPE``, ``parse_vectors``.
- ``store``: The face gallery: identities and their face templates in Redis (keys, MULTI/EXEC
  transactions), searched through the index. Public: ``Gallery``, ``connect``, ``reply_bytes``,
  ``reply_text``.
- ``sync``: The follow thread: other processes' changes, from Redis pub/sub, into the index.
  Public: ``FollowedGallery``, ``GallerySync``.
- ``reencode``: A gallery's templates for a new model, made from another model's by a
  transform. Public: ``Transform``, ``reencode_from``.
- ``feedback``: Operators' corrections of door decisions: probes kept for feedback, quarantined
  templates, negatives and each corrected identity's own tau ceiling. Public:
  ``FeedbackResult``, ``FeedbackStore``, ``QuarantinedTemplate``.
- ``unknowns``: Unknown faces, grouped by person across cameras and days: each unknown track's
  best encodings, clustered incrementally (average linkage), enrolled, deleted or purged after
  retention. Public: ``UnknownCluster``, ``UnknownTrackAdded``, ``UnknownsPurger``,
  ``UnknownsStore``, ``check_cluster_id``, ``nearest_clusters``.
"""
