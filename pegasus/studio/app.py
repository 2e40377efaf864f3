"""The studio's web app: one plain page and a few JSON routes over a Studio (session.py).

Starlette gives the routing and the responses; uvicorn serves it (`serve` in __init__.py). The draws run on
one worker thread, so the event loop stays free to answer the page (its progress polls, a newer
draw) while the network works.
"""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from pegasus.errors import UserError, first_line
from pegasus.studio.session import Draw, Studio, Superseded


def make_app(studio: Studio, worker: ThreadPoolExecutor) -> Starlette:
    routes = Routes(studio, worker)
    return Starlette(routes=[
        Route("/", routes.index),
        Route("/api/state", routes.state),
        Route("/api/draw", routes.draw),
        Route("/api/progress", routes.progress),
        Route("/api/favourite", routes.favourite, methods=["POST"]),
        Route("/favourites/{name}", routes.favourite_file),
    ], exception_handlers={Exception: _unexpected})


class Routes:
    """The page and the JSON it asks for; the network's work runs on `worker`."""

    def __init__(self, studio: Studio, worker: ThreadPoolExecutor) -> None:
        self.studio, self.worker = studio, worker
        self.page = files("pegasus.studio").joinpath("page.html").read_text()

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.page)

    async def state(self, request: Request) -> Response:
        studio = self.studio
        return JSONResponse({"run": str(studio.run), "classes": studio.classes,
                             "sampler": studio.model.trained.plan().name,
                             "samplers": await self._run(studio.samplers),
                             "favourites": studio.favourites()})

    async def draw(self, request: Request) -> Response:
        studio = self.studio
        try:
            asked = Draw.parse(dict(request.query_params), studio.classes)
            drawn = await self._run(studio.draw, studio.ask(), asked)
        except Superseded:
            return JSONResponse({"superseded": True}, status_code=409)
        except UserError as e:
            return _error(e)
        return JSONResponse({"strip": _data_url(drawn.strip), "chosen": _data_url(drawn.chosen),
                             "seconds": round(drawn.seconds, 3),
                             "evaluations": drawn.evaluations})

    async def progress(self, request: Request) -> Response:
        p = self.studio.progress
        return JSONResponse({"draw": p.draw, "done": p.done, "total": p.total})

    async def favourite(self, request: Request) -> Response:
        try:
            fields = json.loads(await request.body() or b"{}")
            if not isinstance(fields, dict):
                raise UserError("a favourite is asked for with the draw's fields as an object")
            asked = Draw.parse({k: str(v) for k, v in fields.items()}, self.studio.classes)
            return JSONResponse(await self._run(self.studio.favourite, asked))
        except json.JSONDecodeError:
            return _error(UserError("a favourite is asked for with the draw's fields as JSON"))
        except (UserError, OSError) as e:
            return _error(e)

    async def favourite_file(self, request: Request) -> Response:
        path = self.studio.favourite_file(request.path_params["name"])
        if path is None:
            return JSONResponse({"error": "no such favourite"}, status_code=404)
        return FileResponse(path, media_type="image/png")


def _error(error: Exception) -> Response:
    """Bad input, shown on the page in one line."""
    return JSONResponse({"error": first_line(error)}, status_code=400)


async def _unexpected(request: Request, error: Exception) -> Response:
    """Anything else: one line for the page, never a traceback."""
    return JSONResponse({"error": f"the studio failed: {type(error).__name__}: "
                                  f"{first_line(error)}"}, status_code=500)


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
