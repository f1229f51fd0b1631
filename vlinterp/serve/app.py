"""The explorer's web app (Starlette; served by uvicorn from ``vlinterp serve``).

Routes (JSON unless said otherwise; errors are ``{"error": "..."}`` with a 4xx status):

* ``GET /``: the page (``static/explorer.html``); ``GET /static/<file>``: its script and styles.
* ``GET /api/info``: model, layers, heads, methods, examples, SAEs, upload limit.
* ``POST /api/images``: the raw bytes of an image (any format PIL reads) -> ``{"id", "width", "height"}``;
  400 when they are not an image, 413 over the size limit. ``GET /api/images/<id>``: the image as PNG.
* ``POST /api/jobs``: ``{"kind": "ask"|"map"|"attention"|"trace"|"sae", "image", "question", ...}`` ->
  the job (202). Arguments are checked before anything is queued (400).
  ``GET /api/jobs/<id>``: state, progress, and the result once done. ``POST /api/jobs/<id>/cancel``.
* ``GET /api/attention?image=&question=&layer=&head=&token=``: one view of the attention browser
  (after an ``attention`` job for that question).
* ``GET /sae/<i>/feature/<k>``: a feature's dashboard (HTML).

Model work runs on job threads (:mod:`.jobs`); the handlers here only check input, queue, and
read results, with any other blocking work sent to a worker thread, so the event loop stays free.
"""
from __future__ import annotations

import json
import logging
from importlib import resources

from ..core.errors import ImageError, InputTooLargeError, UsageError, VlinterpError
from .jobs import Jobs

log = logging.getLogger("vlinterp.serve")

KINDS = ("ask", "map", "attention", "trace", "sae")
STATIC = {"explorer.js": "text/javascript", "explorer.css": "text/css"}
MAX_JSON = 64 * 1024
DRAIN = 8  # bodies up to this many times a limit are read and dropped before the 413


def _static(name: str) -> str:
    if name == "vlinterp.css":
        return resources.files("vlinterp.viz").joinpath("static", name).read_text(encoding="utf-8")
    return resources.files("vlinterp.serve").joinpath("static", name).read_text(encoding="utf-8")


def create_app(bench, max_upload: int = 20 * 2**20, jobs: Jobs | None = None):
    """The Starlette app over ``bench`` (:class:`~vlinterp.serve.work.Workbench`); uploads over
    ``max_upload`` bytes are refused."""
    from anyio import to_thread
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from . import tabs

    jobs = jobs or Jobs()
    from ..viz.report import colorbar_uri

    page = _static("explorer.html")
    colorbar = colorbar_uri(bench.colormap)
    files = {n: _static(n) for n in (*STATIC, "vlinterp.css")}

    def err(status: int, msg: str) -> JSONResponse:
        return JSONResponse({"error": msg}, status_code=status)

    async def body(request, limit: int, what: str) -> bytes:
        """The request body, at most ``limit`` bytes (:class:`InputTooLargeError`, HTTP 413, beyond).
        A body a little over the limit is read to its end and dropped, so the client, still
        sending, can read the 413; one far over it (``DRAIN`` times the limit) is cut off."""
        n = request.headers.get("content-length")
        declared = int(n) if n is not None and n.isdigit() else None
        chunks, size, stream = [], 0, request.stream()
        if declared is None or declared <= limit:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        if declared is not None and declared <= DRAIN * limit:
            async for _ in stream:  # read and drop the rest
                pass
        shown = f"{declared / 2**20:.1f} MiB" if declared is not None else "over the limit"
        raise InputTooLargeError(f"{what} is {shown}; the limit is {limit / 2**20:.1f} MiB")

    async def index(request):
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def static(request):
        name = request.path_params["name"]
        if name not in files:
            return err(404, f"no static file {name!r}")
        ctype = STATIC.get(name, "text/css")
        return Response(files[name], media_type=ctype)

    async def info(request):
        out = await to_thread.run_sync(bench.info)
        out["saes"] = [e.describe(i) for i, e in enumerate(bench.saes)]
        out["max_upload"] = max_upload
        out["colorbar"] = colorbar
        out["kinds"] = list(KINDS)
        return JSONResponse(out)

    async def upload(request):
        data = await body(request, max_upload, "the upload")
        return JSONResponse(await to_thread.run_sync(bench.add_image, data))

    async def image(request):
        png = await to_thread.run_sync(bench.image_png, request.path_params["iid"])
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    def plan(spec: dict):
        """``(kind, key, fn)`` of a job request, every argument checked."""
        if not isinstance(spec, dict):
            raise UsageError("a job request is a JSON object")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise UsageError(f"unknown job kind {kind!r}; kinds: {', '.join(KINDS)}")
        iid = str(spec.get("image") or "")
        if not iid:
            raise ImageError("choose or upload an image first")
        bench.image(iid)
        q = bench.check_question(spec.get("question"))
        if kind in ("ask", "map"):
            method = bench.check_method(str(spec.get("method") or "relevancy"))
            fn = bench.ask_job if kind == "ask" else bench.map_job
            return kind, (kind, iid, q, method), lambda job: fn(job, iid, q, method)
        if kind == "attention":
            return kind, (kind, iid, q), lambda job: bench.attention_job(job, iid, q)
        if kind == "trace":
            words = str(spec.get("words") or "").strip()[:200]
            samples = spec.get("samples", 3)
            if not isinstance(samples, int) or not 1 <= samples <= 10:
                raise UsageError(f"samples must be an integer from 1 to 10, got {samples!r}")
            return kind, (kind, iid, q, words, samples), lambda job: tabs.trace_job(bench, job, iid, q, words, samples)
        where = spec.get("where")
        if not isinstance(where, dict) or not ({"x", "y"} <= set(where) or "pos" in where):
            raise UsageError("SAE features need a position: click a patch of the image or a token")
        if not bench.saes:
            raise UsageError("no SAE is loaded: start the server with --sae DIR (train one with `vlinterp sae harvest` and `vlinterp sae train`)")
        sae = spec.get("sae", 0)
        if not isinstance(sae, int) or not 0 <= sae < len(bench.saes):
            raise UsageError(f"sae must be one of 0..{len(bench.saes) - 1}, got {sae!r}")
        w = {k: where[k] for k in ("x", "y", "pos") if k in where}
        return kind, (kind, iid, q, sae, json.dumps(w, sort_keys=True)), lambda job: tabs.sae_job(bench, job, iid, q, sae, w)

    async def submit(request):
        raw = await body(request, MAX_JSON, "the job request")
        try:
            spec = json.loads(raw or b"{}")
        except ValueError:
            raise UsageError("the job request is not valid JSON") from None
        kind, key, fn = await to_thread.run_sync(plan, spec)
        job = jobs.submit(kind, key, fn)
        return JSONResponse(job.to_json(), status_code=202)

    async def job_state(request):
        job = jobs.get(request.path_params["jid"])
        if job is None:
            return err(404, f"no job {request.path_params['jid']!r}")
        return JSONResponse(job.to_json())

    async def cancel(request):
        job = jobs.cancel(request.path_params["jid"])
        if job is None:
            return err(404, f"no job {request.path_params['jid']!r}")
        return JSONResponse(job.to_json(with_result=False))

    async def attention(request):
        p = request.query_params
        q = bench.check_question(p.get("question"))
        out = await to_thread.run_sync(lambda: bench.attention_view(p.get("image", ""), q, p.get("layer"), p.get("head"), p.get("token")))
        return JSONResponse(out)

    async def dash(request):
        i, k = request.path_params["i"], request.path_params["k"]

        def build():
            with jobs.model_lock:
                return tabs.dashboard(bench, i, k)

        return HTMLResponse(await to_thread.run_sync(build))

    async def too_large(request, exc):
        return err(413, str(exc))

    async def ours(request, exc):
        return err(400, str(exc))

    async def internal(request, exc):
        log.exception("request %s failed", request.url.path)
        return err(500, f"internal error: {type(exc).__name__}: {exc}")

    routes = [Route("/", index), Route("/static/{name}", static), Route("/api/info", info),
              Route("/api/images", upload, methods=["POST"]), Route("/api/images/{iid}", image),
              Route("/api/jobs", submit, methods=["POST"]), Route("/api/jobs/{jid}", job_state),
              Route("/api/jobs/{jid}/cancel", cancel, methods=["POST"]), Route("/api/attention", attention),
              Route("/sae/{i:int}/feature/{k:int}", dash)]
    app = Starlette(routes=routes, exception_handlers={InputTooLargeError: too_large, VlinterpError: ours, Exception: internal})
    app.state.jobs, app.state.bench = jobs, bench
    return app


__all__ = ["create_app", "KINDS"]
