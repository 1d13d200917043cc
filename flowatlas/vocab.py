"""The names flowatlas uses everywhere: code, CLI, docs and charts (see docs/vocabulary.md).

Ids are positions in these tuples; they are stable because cubes store names, not ids.
"""

from __future__ import annotations

#: the remote network types of the seed report, in report order; Unknown first (id 0).
NETWORK_TYPES: tuple[str, ...] = (
    "Unknown",
    "CDN",
    "Hosting",
    "Hyperscaler",
    "ISP Regional",
    "ISP Tier1",
    "Neocloud",
    "Migration",
    "Internal",
)
UNKNOWN = "Unknown"
MIGRATION = "Migration"
INTERNAL = "Internal"

#: ingress = into our network, egress = out of it; internal = ours to ours;
#: transit = neither end is ours (the exporter saw it pass through).
DIRECTIONS: tuple[str, ...] = ("ingress", "egress", "internal", "transit")
INGRESS, EGRESS, INTERNAL_DIR, TRANSIT = range(4)

#: region id 0 is for flows whose region could not be found.
UNKNOWN_REGION = "Unknown"

#: the types the report groups as "other clouds" in its share-of-traffic view: every network
#: that runs its customers' compute, i.e. clouds in the broad sense: traditional hosting
#: (physical and virtual servers), hyperscalers and neoclouds. CDNs (delivery), ISPs (access
#: and transit), Migration (our private links) and Unknown are not clouds. The share is of all
#: traffic with other networks: every type but Internal is in the denominator. The seed's
#: figures need Hosting in the group: neocloud + hyperscaler is 23.3 % and 36.4 % of the
#: 36.2 % and 49.6 % it reports for other clouds, about 13 points short in both quarters.
CLOUD_TYPES: tuple[str, ...] = ("Hosting", "Hyperscaler", "Neocloud")
