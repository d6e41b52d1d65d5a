"""`wearsync events sink`: a receiver of wearsync's webhooks on this machine, for trying them out
(`make run` starts one and registers it as an endpoint of the demo application).

It does what a receiver of yours does: checks each delivery's signature with the `standardwebhooks`
package (the endpoint's secret, `whsec_…`, from WEARSYNC_SINK_SECRET: never on the command line)
and prints the event, one line each; an event delivered again (the same `webhook-id`, after a lost
answer or a replay) is marked `again`. A delivery that does not verify is answered 401, printed as
refused, and not shown.
"""

from collections import OrderedDict

from aiohttp import web
from rich.console import Console
from rich.text import Text
from standardwebhooks import Webhook, WebhookVerificationError

from wearsync.tail import render

SECRET_ENV = "WEARSYNC_SINK_SECRET"
REMEMBERED = 100_000  # webhook ids kept to tell a delivery again from a first one
MAX_BODY = 1024 * 1024


def create_sink_app(secret: str, out: Console) -> web.Application:
    webhook = Webhook(secret)
    seen: OrderedDict[str, None] = OrderedDict()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = webhook.verify(body, dict(request.headers))
        except (WebhookVerificationError, ValueError) as e:
            out.print(Text(f"refused a delivery to {request.path}: {e}", style="bold red"), soft_wrap=True)
            return web.json_response({"detail": f"Invalid signature: {e}"}, status=401)
        event_id = request.headers["webhook-id"]
        again = event_id in seen
        seen[event_id] = None
        if len(seen) > REMEMBERED:
            seen.popitem(last=False)
        out.print(render(event, f"{event_id}, verified{', again' if again else ''}"), soft_wrap=True)
        return web.Response(status=204)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/{path:.*}", receive)
    return app
