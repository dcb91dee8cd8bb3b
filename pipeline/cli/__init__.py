"""The ``facestream`` command: the composition root, the only place in pipeline/ that
imports calibration. One module per command group; ``main`` mounts them all.

Modules and their public names:

- ``main``: The ``facestream`` command, every group mounted. Public: ``app``, ``main``.
- ``options``: Options and settings shared by the commands. Public: ``ConfigOption``,
  ``JsonOption``, ``BackendOption``, ``PrecisionOption``, ``load_settings``.
- ``errors``: How every ``facestream`` command reports the project's errors: one line, exit
  status 2. Public: ``reports_errors``.
- ``config``: ``check-config``, ``doctor``, ``config reference``. Public: ``check_config``,
  ``doctor``, ``config_app``.
- ``engines``: ``engines build|list|parity``. Public: ``engines_app``, ``prepare_models``.
- ``identities``: ``enroll``, ``identify``, ``verify``, ``identities list|remove``, ``gallery
  reencode``. Public: ``enroll``, ``identify``, ``verify``, ``identities_app``, ``gallery_app``.
- ``credentials``: ``identities credential set|show|clear``. Public: ``credential_app``.
- ``process``: ``process`` (a recording). Public: ``process``.
- ``run``: ``run`` (the service) and ``sample``. Public: ``run``, ``sample``.
- ``audit``: ``audit verify``. Public: ``audit_app``.
- ``events``: ``events tail``. Public: ``events_app``.
- ``feedback``: ``feedback EVENT_ID --wrong|--right`` (through the running service's API).
  Public: ``feedback``.
- ``unknowns``: ``unknowns list|enroll|delete``, the unknown faces grouped by person. Public:
  ``unknowns_app``.

The ``style`` and ``stylize`` commands live with their room (``pipeline.style.cli``); the
``calibrate``, ``eval`` and ``train`` groups with calibration.
"""
