"""Reading the files a template names: as normalized text, and only from its own folder."""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from pathlib import Path

from schema_salad.exceptions import ValidationException
from schema_salad.fetcher import DefaultFetcher

# The made-up folder of a template that was given as text, not loaded from a file.
VIRTUAL_DIR = "file:///caroni-templates/"


def normalize_text(text: str) -> str:
    """LF line ends and no BOM: what web forms save varies, and cwl-utils wants LF."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def path_in_folder(url: str, base_dir: Path | None) -> Path | None:
    """The local path of a file: URL if it lies inside base_dir, else None."""
    split = urllib.parse.urlsplit(url)
    if base_dir is None or split.scheme != "file" or split.netloc not in ("", "localhost"):
        return None
    path = Path(urllib.request.url2pathname(split.path)).resolve()
    return path if path.is_relative_to(base_dir) else None


def shown_path(url: str, base_dir: Path | None) -> str:
    """A URL as the user wrote it: relative to the template's folder, no file://."""
    split = urllib.parse.urlsplit(url)
    if split.scheme == "file":
        path = Path(urllib.request.url2pathname(split.path))
        if base_dir is not None:
            return Path(os.path.relpath(path, base_dir)).as_posix()
        if url.startswith(VIRTUAL_DIR):
            return urllib.parse.unquote(url[len(VIRTUAL_DIR) :])
        return path.as_posix()
    return url


class FolderFetcher(DefaultFetcher):
    """Lets cwl-utils read files inside the template's folder, and nothing else.

    The default fetcher would read any local file and reach the network (even just
    to check that ``https://caroni.example/cwl#...`` exists); a template comes from
    a user, so neither is acceptable.
    """

    def __init__(self, base_dir: Path | None) -> None:
        super().__init__({}, None)
        self._base_dir = base_dir

    def _allowed(self, url: str) -> Path | None:
        return path_in_folder(url, self._base_dir)

    def fetch_text(self, url: str, content_types: list[str] | None = None) -> str:
        path = self._allowed(url)
        if path is None:
            raise ValidationException(
                f"refusing to read {url}: a template may only refer to files in its own folder"
            )
        try:
            return normalize_text(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationException(f"cannot read {path.name}: {exc}") from exc

    def check_exists(self, url: str) -> bool:
        path = self._allowed(url)
        return path is not None and path.exists()
