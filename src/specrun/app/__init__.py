"""``specrun app``: a local web app over the store's trained models, for people who do not write SQL.

``service`` does the work (models, classifying texts and files, efficiency); ``ui`` lays it out as a
Gradio page; ``serve`` starts it. Gradio is an optional extra (``pip install 'specrun[app]'``): import
this package only when serving.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time

from specrun.errors import UsageError, did_you_mean
from specrun.store.db import Store

log = logging.getLogger("specrun.app")

#: Uploads larger than this are refused by the server before they reach the app.
MAX_UPLOAD = "50mb"


def is_local(host: str) -> bool:
    """Whether ``host`` only serves this machine (a loopback name or address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _quiet_gradio() -> None:
    """No analytics, version checks or telemetry: the app talks to nobody but its browser."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def start(
    store: Store,
    experiment: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    record: bool = False,
):
    """Build the page over ``store`` and start serving it without blocking; returns (page, url)."""
    _quiet_gradio()
    from specrun.app.service import Evaluation
    from specrun.app.ui import CSS, build

    evaluation = Evaluation(store, record=record)
    if experiment is not None:
        known = evaluation.experiments()
        if experiment not in known:
            hint = (
                f"{did_you_mean(experiment, known)}; experiments with trained models: {', '.join(known)}"
                if known
                else " (it holds no trained models yet)"
            )
            raise UsageError(f"no experiment {experiment!r} with trained models in {store.path}{hint}")
    if record:
        with store.write():  # a store --record cannot write fails now, not at the first prediction
            pass
    page = build(evaluation, experiment)
    try:
        page.launch(
            server_name=host,
            server_port=port,
            share=share,
            prevent_thread_lock=True,
            quiet=True,
            inbrowser=False,
            ssr_mode=False,
            enable_monitoring=False,
            mcp_server=False,
            footer_links=[],
            run_history=False,
            max_file_size=MAX_UPLOAD,
            allowed_paths=[str(evaluation.out_dir)],
            css=CSS,
        )
    except OSError as exc:
        raise UsageError(
            f"cannot serve on {host}:{port}: {str(exc).splitlines()[0]}; pass --port with a free port"
        ) from None
    url = page.share_url if share and page.share_url else page.local_url
    threading.Thread(target=_warm_up, name="specrun-app-warm-up", daemon=True).start()
    return page, url


def _warm_up() -> None:
    """Import what loading a model needs (torch, transformers, peft: seconds) while the page is already
    served, so the first model a person picks loads in the time the model itself takes."""
    try:
        import specrun.driver.models
        import specrun.runner.predict  # noqa: F401
    except Exception:
        log.debug("warming up the model imports failed", exc_info=True)


def serve(
    store: Store,
    experiment: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    record: bool = False,
) -> None:
    """Serve the app until Ctrl-C."""
    from specrun.console import err

    if share:
        log.warning(
            "--share: the app gets a public gradio.live link through Gradio's tunnel; anyone with the link can "
            "run this store's models on their own texts and files (there is no login)"
        )
    if not is_local(host):
        log.warning(
            f"--host {host}: the app is served to every machine that can reach this one on port {port}, "
            "with no login; use the default 127.0.0.1 to keep it on this machine"
        )
    started = time.perf_counter()
    page, url = start(store, experiment, host, port, share, record)
    err.print(
        f"specrun app: serving {store.path} at {url} (ready in {time.perf_counter() - started:.1f} s; Ctrl-C stops it)",
        markup=False,
        highlight=False,
    )
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("specrun app: stopped", markup=False, highlight=False)
    finally:
        page.close()
