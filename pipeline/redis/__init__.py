"""Redis: the embedded server, who may connect (passwords), and high availability
(Sentinel, Cluster, replica-acknowledged writes).

Modules and their public names:

- ``client``: Who may use the gallery's Redis: the password, and the refusal of a Redis open to
  anyone. Public: ``PASSWORD_ENVIRONMENT_VARIABLE``, ``redis_password``.
- ``cluster``: Redis Cluster: the gallery's and the events' keys spread over several masters.
  Public: ``CLUSTER_SCHEME``, ``ClusterUrl``, ``RedisClient``, ``RedisPipeline``,
  ``acknowledged_cluster_transaction``, ``cluster_client``, ``cluster_problem``,
  ``is_cluster_url``, ``parse_cluster_url``, ``publish_command``, ``redis_problem``.
- ``errors``: redis-py's errors in the project's terms, parameterised by the errors to raise.
  Public: ``translated_redis_errors``.
- ``ha``: Redis high availability: a gallery Redis watched by Sentinel, and writes that a
  replica. Public: ``SENTINEL_SCHEME``, ``SentinelUrl``, ``acknowledged_transaction``,
  ``is_sentinel_url``, ``parse_sentinel_url``, ``redis_location``, ``sentinel_client``.
- ``server``: The embedded Redis: a real ``redis-server`` child process on a unix socket under a
  data dir. Public: ``BINARY_ENVIRONMENT_VARIABLE``, ``EmbeddedRedis``, ``locate_redis_server``,
  ``make_private_dir``, ``running_embedded_url``.
- ``urls``: What Sentinel and Cluster URLs share: ``host:port`` node lists and credentials.
  Public: ``parse_credentials``, ``parse_nodes``.
"""
