"""Adapter for Google's Gemini models: the Gemini API and Vertex AI.

Both speak `generateContent` / `streamGenerateContent?alt=sse` with the same JSON
(translated by `ktproxy.wire.gemini*`); they differ in where the model sits in the
URL and how the caller proves who it is:

- `api: gemini`: `{base_url}/v1beta/models/{model}:...`, the key in `x-goog-api-key`;
- `api: vertex`: `{base_url}/v1/projects/{project}/locations/{location}/publishers/
  google/models/{model}:...`, an OAuth access token as `Authorization: Bearer`.

The model is the one in the OpenAI request (the router already rewrote it).
"""

from __future__ import annotations

import re
from functools import partial
from urllib.parse import quote

import orjson

from ktproxy.config import Target, Timeouts, VertexOptions
from ktproxy.errors import bad_request
from ktproxy.providers.base import UpstreamCall, UpstreamResponse
from ktproxy.providers.http import NetworkedProvider, StreamTranslator, TranslatedResponse
from ktproxy.providers.httpclient import Response
from ktproxy.providers.pool import OriginPool
from ktproxy.wire import gemini, gemini_response
from ktproxy.wire.gemini_stream import GeminiStreamTranslator

# A trailing API version on base_url is accepted and not doubled (the adapter
# always uses the version its URL shape documents).
_VERSION_SUFFIX = re.compile(r"/v1(?:alpha|beta\d*)?$")
# Google's response headers a client may rely on.
PASS_RESPONSE_HEADERS = ("retry-after",)


def api_root(base_url: str) -> str:
    """`base_url` without trailing slashes or API version."""
    return _VERSION_SUFFIX.sub("", base_url.rstrip("/")).rstrip("/")


class GeminiResponse(TranslatedResponse):
    """A Gemini response in OpenAI's format; a 429's wait, which Google states in the
    error body (`RetryInfo`), becomes the `retry-after` header OpenAI clients read."""

    def __init__(
        self,
        resp: Response,
        target: Target,
        timeouts: Timeouts,
        *,
        model: str,
        stream: StreamTranslator | None,
    ) -> None:
        super().__init__(
            resp,
            target,
            timeouts,
            headers={k: v for k in PASS_RESPONSE_HEADERS if (v := resp.headers.get(k))},
            translate_body=partial(gemini_response.completion, model=model),
            translate_error=self._translate_error,
            stream=stream,
        )
        self._headers = dict(self.headers)
        self.headers = self._headers

    def _translate_error(self, status: int, body: bytes) -> bytes:
        if status == 429 and "retry-after" not in self._headers:
            seconds = gemini_response.retry_after(body)
            if seconds is not None:
                self._headers["retry-after"] = seconds
        return gemini_response.error_body(status, body)


class VertexProvider(NetworkedProvider):
    """Talks to Gemini through the Gemini API or Vertex AI, per the target's options."""

    kind = "google-vertex"

    def __init__(
        self,
        target: Target,
        timeouts: Timeouts,
        api_key: str | None,
        pool: OriginPool | None,
    ) -> None:
        super().__init__(target, timeouts, api_key, pool)
        assert target.base_url is not None
        self.options = target.vertex or VertexOptions()
        root = api_root(target.base_url)
        if self.options.api == "vertex":
            assert self.options.project is not None, "config check: api vertex needs project"
            project = quote(self.options.project, safe="")
            location = quote(self.options.location, safe="")
            self._models_url = (
                f"{root}/v1/projects/{project}/locations/{location}/publishers/google/models/"
            )
        else:
            self._models_url = f"{root}/v1beta/models/"

    def url(self, model: str, stream: bool) -> str:
        """The method URL for `model` (a `models/` prefix, Google's resource form, is
        accepted)."""
        model = model.removeprefix("models/")
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        return self._models_url + quote(model, safe="-._~@") + method

    def auth_headers(self, key: str | None) -> dict[str, str]:
        """The credential header of this target's API."""
        if not key:
            return {}
        if self.options.api == "vertex":
            return {"Authorization": f"Bearer {key}"}
        return {"x-goog-api-key": key}

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        try:
            request = orjson.loads(call.body)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            raise bad_request("The request body must be a JSON object.")
        model = str(request.get("model") or self.target.model)
        body = orjson.dumps(gemini.gemini_request(request))
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if call.stream else "application/json",
            **self.auth_headers(call.api_key),
        }
        resp = await self._post(self.url(model, call.stream), body, headers)
        stream = None
        if call.stream:
            options = request.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            stream = GeminiStreamTranslator(model, include_usage)
        return GeminiResponse(resp, self.target, self.timeouts, model=model, stream=stream)
