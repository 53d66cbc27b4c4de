"""``trigger login``, ``trigger whoami``, ``trigger deploy``: credentials and deployments.

Profiles: ``trigger login --api-url URL --key KEY [--profile NAME]`` checks the key against the
API (``GET /api/v1/whoami``) and stores it under the profile name (``default`` unless given) in
``$TRIGGER_CONFIG_DIR/profiles.json`` (default ``~/.config/trigger-worker``), readable by the
user only. Every command here takes ``--profile``; without it the environment
(``TRIGGER_API_URL`` / ``TRIGGER_SECRET_KEY``) wins, then the ``default`` profile. Keys are never
printed.

``trigger deploy``: discover the project (as a worker would), write the image's Dockerfile
(worker/dockerfile.py) to ``.trigger/Dockerfile``, build it when ``--build`` is given and
``docker`` or ``podman`` is installed, register the version with the API, and promote it —
unless ``--skip-promotion`` — once the API is healthy and the image (if built) built.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.cli_settings import CliSettings

if TYPE_CHECKING:
    from worker.cli_settings import Formatter, SubParsers

DEFAULT_PROFILE = "default"


class CliError(SystemExit):
    """A command failed; the message says why and what to do."""


@dataclass(frozen=True)
class Credentials:
    api_url: str
    secret_key: str
    profile: str | None


def _profiles_path(settings: CliSettings) -> Path:
    return settings.profiles_dir() / "profiles.json"


def load_profiles(settings: CliSettings) -> dict[str, dict[str, str]]:
    path = _profiles_path(settings)
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return dict(data.get("profiles", {}))


def save_profile(settings: CliSettings, name: str, api_url: str, secret_key: str) -> Path:
    profiles = load_profiles(settings)
    profiles[name] = {"api_url": api_url.rstrip("/"), "secret_key": secret_key}
    path = _profiles_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"profiles": profiles}, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def credentials(settings: CliSettings, profile: str | None) -> Credentials:
    if profile is None and settings.secret_key:
        return Credentials(settings.api_url.rstrip("/"), settings.secret_key, None)
    name = profile or DEFAULT_PROFILE
    found = load_profiles(settings).get(name)
    if found is None:
        raise CliError(f"no profile {name!r}: run `trigger login --api-url URL --key KEY"
                       f"{'' if name == DEFAULT_PROFILE else ' --profile ' + name}` "
                       "(or set TRIGGER_API_URL and TRIGGER_SECRET_KEY)")
    return Credentials(found["api_url"], found["secret_key"], name)


def _request(creds: Credentials, method: str, path: str, body: Any = None) -> Any:
    import httpx

    try:
        response = httpx.request(method, creds.api_url + path, json=body, timeout=30,
                                 headers={"authorization": f"Bearer {creds.secret_key}"})
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the API at {creds.api_url}: {exc}") from None
    if response.status_code >= 400:
        try:
            message = response.json().get("error")
        except ValueError:
            message = response.text[:200]
        raise CliError(f"{method} {path} → {response.status_code}: {message}")
    return response.json()


def _describe(me: dict[str, Any], creds: Credentials) -> str:
    env = me["environment"]
    return (f"project {me['project']['ref']}, environment {env['slug']} ({env['type']}) "
            f"at {creds.api_url}" + (f" [profile {creds.profile}]" if creds.profile else ""))


def cmd_login(args: argparse.Namespace, settings: CliSettings) -> int:
    name = args.profile or DEFAULT_PROFILE
    creds = Credentials(args.api_url.rstrip("/"), args.key, name)
    me = _request(creds, "GET", "/api/v1/whoami")
    path = save_profile(settings, name, creds.api_url, creds.secret_key)
    print(f"Logged in: {_describe(me, creds)}; saved in {path}")
    return 0


def cmd_whoami(args: argparse.Namespace, settings: CliSettings) -> int:
    creds = credentials(settings, args.profile)
    print(_describe(_request(creds, "GET", "/api/v1/whoami"), creds))
    return 0


def _container_engine() -> str | None:
    for name in ("docker", "podman"):
        if shutil.which(name):
            return name
    return None


def cmd_deploy(args: argparse.Namespace, settings: CliSettings) -> int:
    from worker.dockerfile import BuildError, generate
    from worker.runtime.discovery import DiscoveryError, discover

    project_dir = Path(args.project_dir).resolve()
    creds = credentials(settings, args.profile)
    try:
        found = discover(project_dir)
        dockerfile = generate(project_dir, found.config)
    except (DiscoveryError, BuildError) as exc:
        raise CliError(f"deploy: {exc}") from None
    if not found.manifest:
        raise CliError("deploy: the project exports no tasks")
    out = project_dir / ".trigger" / "Dockerfile"
    out.parent.mkdir(exist_ok=True)
    out.write_text(dockerfile)
    print(f"Dockerfile: {out}")
    image = args.image or f"{found.config.project}:{found.content_hash[:12]}"
    if args.build:
        engine = _container_engine()
        if engine is None:
            raise CliError("deploy --build: no container engine (docker or podman) found; "
                           f"build {out} elsewhere and deploy with --image")
        built = subprocess.run([engine, "build", "-t", image, "-f", str(out), str(project_dir)])
        if built.returncode != 0:
            raise CliError(f"deploy: `{engine} build` failed ({built.returncode}); not registered")
    deployment = _request(creds, "POST", "/api/v1/deployments", {
        "contentHash": found.content_hash, "tasks": found.manifest, "image": image})
    print(f"Registered version {deployment['version']} as {deployment['id']} "
          f"({len(found.manifest)} tasks, image {image})")
    if args.skip_promotion:
        print("Not promoted (--skip-promotion)")
        return 0
    _request(creds, "GET", "/healthz")
    promoted = _request(creds, "POST", f"/api/v1/deployments/{deployment['id']}/promote")
    print(f"Promoted: version {promoted['version']} is current ({promoted['status']})")
    return 0


def add_commands(sub: SubParsers, formatter: Formatter = argparse.HelpFormatter) -> None:
    """Add ``login``, ``whoami`` and ``deploy`` to the ``trigger`` parser (worker/cli.py)."""
    login = sub.add_parser("login", help="store an API URL and secret key as a profile",
                           formatter_class=formatter)
    login.add_argument("--api-url", required=True, help="the API's base URL")
    login.add_argument("--key", required=True, help="the environment's secret key")
    login.add_argument("--profile", default=None, help=f"profile name (default {DEFAULT_PROFILE})")
    login.set_defaults(func=cmd_login)

    who = sub.add_parser("whoami", help="show the project and environment of the credentials",
                         formatter_class=formatter)
    who.add_argument("--profile", default=None,
                     help=f"profile name (default {DEFAULT_PROFILE})")
    who.set_defaults(func=cmd_whoami)

    deploy = sub.add_parser("deploy", help="write the worker image's Dockerfile, register and "
                                           "promote the version", formatter_class=formatter)
    deploy.add_argument("--project-dir", default=".", help="the project folder")
    deploy.add_argument("--profile", default=None,
                        help=f"profile name (default {DEFAULT_PROFILE})")
    deploy.add_argument("--build", action="store_true",
                        help="build the image with docker/podman before registering")
    deploy.add_argument("--image", default=None, help="image reference to record")
    deploy.add_argument("--skip-promotion", action="store_true",
                        help="register the version without making it current")
    deploy.set_defaults(func=cmd_deploy)
