"""Operations over every build of a storage location: ``verify --all``, its shards and their merge.

* :mod:`.listing` finds the builds of a location (a directory, ``s3://``, ``gs://``) and splits them
  into stable shards by build id.
* :mod:`.standin` lets ``verify`` check a remote build where it lies: small files fetched, data files
  streamed once through the hasher (and, for the rootfs, into a private sparse file for the ext4
  checks), nothing left behind.
* :mod:`.run` verifies the builds in parallel and reports each result as it is ready.
* :mod:`.results` holds the per-build records, the summary, the JSON lines files and their merge.
"""

from __future__ import annotations

from .listing import Shard, StoredBuild, list_builds, parse_shard, shard_of, template_location
from .results import BuildResult, MergeStatus, Summary, merge_results, read_results, results_name
from .run import FleetOptions, verify_all

__all__ = ["BuildResult", "FleetOptions", "MergeStatus", "Shard", "StoredBuild", "Summary", "list_builds",
           "merge_results", "parse_shard", "read_results", "results_name", "shard_of", "template_location",
           "verify_all"]
