"""Rendering the report: the Jinja2 template (autoescaped), chart specs escaped for a <script> element, the inlined
Vega bundle, and replayed tokens as coloured spans.

Text from logs (prompts, outputs, deployment names, reject lines) is untrusted. In HTML it goes through Jinja2's
autoescaping only; inside <script> elements it travels as JSON in which every character that could end the element or
start markup is written as a \\uXXXX escape (see :func:`script_json`). A Content-Security-Policy with a per-report
nonce additionally refuses any script the report did not write itself, and any network request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from specdiag.output import clean_floats
from specdiag.resources import reports_dir

TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"

# Characters that are significant to the HTML parser inside a <script> element (or to old JS parsers), written as
# JSON \u escapes. They can only occur inside JSON strings, so the escaped text parses to the same value.
_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_TABLE = str.maketrans(_SCRIPT_ESCAPES)  # type: ignore[arg-type]


def script_json(value: Any) -> str:
    """JSON text safe to place verbatim inside a <script> element: no '<', '>', '&', U+2028 or U+2029 remains."""
    text = json.dumps(clean_floats(value), ensure_ascii=False, allow_nan=False, default=str)
    return text.translate(_SCRIPT_TABLE)


def _cache_dir() -> Path:
    base = os.environ.get("SPECDIAG_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "specdiag") / "vega"


@lru_cache(maxsize=2)
def vega_bundle(vl_version: str) -> str:
    """vega, vega-lite and vega-embed as one classic script (from vl-convert: offline, no CDN).

    Building it takes seconds, so it is cached on disk per vl-convert and vega-lite version (the bundle is a pure
    function of the two). The bundle is code, not data; a literal "</script" inside it (there is none today) would
    still end the element, so it is written as "<\\/script", which means the same inside a JS string or regex.
    """
    import vl_convert

    path = _cache_dir() / f"vega-bundle-{version('vl-convert-python')}-vl{vl_version}.js"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    bundle = vl_convert.javascript_bundle(vl_version=vl_version)  # type: ignore[call-arg]
    bundle = bundle.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(bundle, encoding="utf-8")
        tmp.replace(path)  # atomic: concurrent writers write the same bytes
    except OSError:
        pass  # a read-only home only costs the rebuild next time
    return bundle


def token_style(accepted: bool, p: float | None) -> str:
    """Background for one replayed draft token: green if accepted, red if rejected; stronger when the target was
    more confident (p = target probability of the drafted token, in [0, 1]). Built from numbers only."""
    conf = 0.5 if p is None else min(max(float(p), 0.0), 1.0)
    alpha = 0.15 + 0.7 * conf
    rgb = "22,163,74" if accepted else "220,38,38"
    return f"background-color: rgba({rgb},{alpha:.2f})"


def token_title(tok: dict[str, Any]) -> str:
    q = "?" if tok.get("q") is None else f"{tok['q']:.3f}"
    p = "?" if tok.get("p") is None else f"{tok['p']:.3f}"
    verdict = "accepted" if tok["accepted"] else "rejected"
    return f"step {tok['step']} position {tok['position']}: {verdict}, target p={p}, draft q={q}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(reports_dir())),
        autoescape=True,  # every {{ }} is HTML-escaped unless a value is explicitly marked safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty_json"] = lambda v: json.dumps(
        clean_floats(v), indent=1, ensure_ascii=False, default=str
    )
    env.filters["fmt"] = _fmt
    env.filters["minutes"] = lambda t: t.strftime("%Y-%m-%d %H:%M") if t is not None else ""
    env.globals["token_style"] = token_style
    env.globals["token_title"] = token_title
    return env


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def render(context: dict[str, Any], charts: list[dict[str, Any]], vl_version: str) -> str:
    """The whole page. charts: [{id, title, spec}] with vega-lite specs (dicts); specs are embedded as escaped JSON."""
    env = _environment()
    css = (reports_dir() / STYLESHEET).read_text(encoding="utf-8")
    embedded = [
        {"id": c["id"], "title": c["title"], "spec_json": Markup(script_json(c["spec"]))} for c in charts
    ]
    template = env.get_template(TEMPLATE)

    def page(nonce: str, generated_at: str) -> str:
        return template.render(
            **dict(context, generated_at=generated_at),
            charts=embedded,
            css=Markup(css),
            vega_bundle=Markup(vega_bundle(vl_version)),
            nonce=nonce,
        )

    return page(_nonce(page("", "")), context["generated_at"])


def _nonce(page: str) -> str:
    """The CSP nonce: a digest of the page (without nonce and generation time), so that the same store gives the
    same bytes. Text from the store cannot carry it: it would have to contain its own hash."""
    digest = hashlib.sha256(page.encode("utf-8")).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
