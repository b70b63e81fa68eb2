"""Moving file trees between this machine and a guest, as tar streams.

``pack`` (a local tree -> tar chunks), ``unpack`` (tar chunks -> a local tree,
all or nothing) and ``paths.destination`` (``docker cp``'s rules for where a
copy lands). The network side is :class:`fc_macos.agent.client.AgentClient`
(``get_files`` / ``put_files``); :mod:`fc_macos.transfer.copy` puts them together.
"""
