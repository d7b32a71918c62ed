"""A small OCI distribution client over requests: manifests and blobs, anonymous/Bearer/Basic auth.

Auth follows the registry token flow: a request answered ``401`` with
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` is retried with a
token fetched from the realm (with Basic credentials from
``~/.docker/config.json`` when there are any); a ``Basic`` challenge is
answered with those credentials directly.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError, ExitCode
from .reference import DOCKER_HUB, DOCKER_HUB_API, RegistryRef

if TYPE_CHECKING:
    import requests

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_CHUNK = 1 << 20
_TIMEOUT = (10, 120)


def docker_credentials(registry: str) -> tuple[str, str] | None:
    """``(user, password)`` for ``registry`` from ``$DOCKER_CONFIG/config.json`` (``auths`` entries)."""
    config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        doc = json.loads((config_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    auths = doc.get("auths") or {}
    names = [registry, f"https://{registry}", f"http://{registry}"]
    if registry in (DOCKER_HUB, DOCKER_HUB_API):
        names += ["https://index.docker.io/v1/", "index.docker.io", DOCKER_HUB_API]
    for name in names:
        entry = auths.get(name) or auths.get(name.rstrip("/"))
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
        if entry.get("username"):
            return str(entry["username"]), str(entry.get("password", ""))
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


class RegistryClient:
    def __init__(self, ref: RegistryRef, *, insecure: bool = False) -> None:
        import requests

        self.ref = ref
        self.insecure = insecure
        self.base = f"{'http' if insecure else 'https'}://{ref.api_host}/v2"
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "e2b-artifact"
        self.credentials = docker_credentials(ref.registry)
        self._auth_header: str | None = None

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        import requests

        for attempt in range(2):
            headers = dict(kwargs.pop("headers", {}) or {})
            if self._auth_header:
                headers["Authorization"] = self._auth_header
            try:
                resp = self.session.request(method, url, headers=headers, timeout=_TIMEOUT, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise ArtifactError(f"TLS error talking to {self.ref.api_host}: {exc}",
                                    hint="for a plain-HTTP registry pass --insecure", code=ExitCode.REMOTE) from exc
            except requests.exceptions.ConnectionError as exc:
                raise ArtifactError(f"cannot reach registry {self.ref.api_host}: {exc}",
                                    hint="check the host and port; plain-HTTP registries need --insecure",
                                    code=ExitCode.REMOTE) from exc
            kwargs["headers"] = headers
            if resp.status_code == 401 and attempt == 0 and self._authenticate(resp):
                resp.close()
                continue
            return resp
        return resp

    def _authenticate(self, resp: requests.Response) -> bool:
        scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if not self.credentials:
                return False
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            self._auth_header = f"Basic {token}"
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        query = {"service": params["service"]} if "service" in params else {}
        query["scope"] = params.get("scope") or f"repository:{self.ref.repository}:pull"
        import requests

        try:
            token_resp = self.session.get(params["realm"], params=query, auth=self.credentials, timeout=_TIMEOUT)
        except requests.exceptions.RequestException as exc:
            raise ArtifactError(f"cannot reach the token service {params['realm']}: {exc}",
                                hint="check the registry's auth configuration", code=ExitCode.REMOTE) from exc
        if token_resp.status_code != 200:
            raise ArtifactError(f"token service {params['realm']} refused access "
                                f"(HTTP {token_resp.status_code}) for {self.ref}",
                                hint="log in: put credentials for this registry in ~/.docker/config.json "
                                     "(docker login / skopeo login --authfile ~/.docker/config.json)",
                                code=ExitCode.REMOTE)
        body = token_resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise ArtifactError(f"token service {params['realm']} answered without a token",
                                hint="check the registry's auth configuration", code=ExitCode.REMOTE)
        self._auth_header = f"Bearer {token}"
        return True

    def _fail(self, resp: requests.Response, what: str) -> ArtifactError:
        if resp.status_code == 401:
            return ArtifactError(f"registry {self.ref.api_host} refused {what}: unauthorized",
                                 hint="put credentials in ~/.docker/config.json (auths entry for this registry)",
                                 code=ExitCode.REMOTE)
        if resp.status_code == 404:
            return ArtifactError(f"{what} not found on {self.ref.api_host}",
                                 hint="check the repository, tag or digest", code=ExitCode.BAD_INPUT)
        return ArtifactError(f"registry {self.ref.api_host} answered HTTP {resp.status_code} for {what}",
                             hint="retry later; run with --debug for details", code=ExitCode.REMOTE)

    def head_manifest(self, reference: str) -> str | None:
        """The digest a tag points at (``Docker-Content-Digest``), without downloading the manifest."""
        resp = self._request("HEAD", f"{self.base}/{self.ref.repository}/manifests/{reference}",
                             headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if resp.status_code != 200:
            return None
        return resp.headers.get("Docker-Content-Digest")

    def get_manifest(self, reference: str, limit: int) -> tuple[bytes, str]:
        """Raw manifest bytes (at most ``limit``) and media type."""
        what = f"manifest {self.ref.repository}:{reference}"
        resp = self._request("GET", f"{self.base}/{self.ref.repository}/manifests/{reference}",
                             headers={"Accept": ", ".join(MANIFEST_TYPES)}, stream=True)
        with resp:
            if resp.status_code != 200:
                raise self._fail(resp, what)
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            data = bytearray()
            for chunk in resp.iter_content(_CHUNK):
                data += chunk
                if len(data) > limit:
                    raise ArtifactError(f"{what} on {self.ref.api_host} is larger than {limit >> 20} MiB",
                                        hint="the registry serves something that is not an image manifest",
                                        code=ExitCode.BAD_INPUT)
        return bytes(data), media_type

    def blob_chunks(self, digest: str, on_bytes: Callable[[int], None], size: int) -> Iterator[bytes]:
        """The blob's bytes; more than ``size`` (its descriptor's) is refused as soon as it arrives."""
        resp = self._request("GET", f"{self.base}/{self.ref.repository}/blobs/{digest}", stream=True)
        with resp:
            if resp.status_code != 200:
                raise self._fail(resp, f"blob {digest}")
            received = 0
            for chunk in resp.iter_content(_CHUNK):
                received += len(chunk)
                if received > size:
                    raise ArtifactError(f"blob {digest} from {self.ref.api_host} has more than the {size} bytes "
                                        "its descriptor says", hint="the registry served corrupt or tampered data",
                                        code=ExitCode.INTEGRITY)
                on_bytes(len(chunk))
                yield chunk
