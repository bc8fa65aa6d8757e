"""A file the user sent the robot, fetched from DingTalk (the platform's half of SkillServices.download).

Two steps, as DingTalk documents them ("获取机器人消息中文件下载链接", docs/dingtalk-protocol-facts.md):
``POST /v1.0/robot/messageFiles/download {"downloadCode", "robotCode"}`` with the app's access token answers
``{"downloadUrl"}``, a short-lived link; a plain GET of that link gives the bytes. The download code travels in
the message's DingTalkExtras. The bytes are read in a stream and abandoned as soon as they pass the limit, so a
huge file never fills the memory. Neither the code nor the link (both grant access to the file) is logged."""

from __future__ import annotations

import logging

import httpx

from ..skills.base import AttachmentError
from ..types import IncomingMessage
from .message import extras_of
from .openapi import DingTalkAPI, DingTalkAPIError

log = logging.getLogger("connector.dingtalk.files")

DOWNLOAD_API = "/v1.0/robot/messageFiles/download"


class DingTalkFiles:
    def __init__(self, api: DingTalkAPI, robot_code: str, http: httpx.AsyncClient, timeout_s: float = 60.0) -> None:
        self.api, self.robot_code, self.http, self.timeout_s = api, robot_code, http, timeout_s

    async def download_url(self, message: IncomingMessage) -> str:
        """The temporary link to the message's file (AttachmentError when DingTalk will not give one)."""
        code = extras_of(message).download_code
        if not code:
            raise AttachmentError("the message carries no download code")
        try:
            answer = await self.api.call("POST", DOWNLOAD_API, {"downloadCode": code, "robotCode": self.robot_code},
                                         budgeted=False)
        except DingTalkAPIError as exc:
            log.warning("file of %s: DingTalk refused the download link: %s %s", message.message_id, exc.status,
                        exc.code)
            raise AttachmentError(f"DingTalk refused the download: {exc.status} {exc.code}",
                                  "network" if exc.status == 0 else "unavailable") from exc
        url = answer.get("downloadUrl")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise AttachmentError("DingTalk answered without a download link")
        return url

    async def download(self, message: IncomingMessage, max_bytes: int) -> bytes:
        """The file's bytes; AttachmentError("too_large") as soon as they pass ``max_bytes``."""
        url = await self.download_url(message)
        try:
            async with self.http.stream("GET", url, timeout=self.timeout_s, follow_redirects=True) as r:
                if r.status_code != 200:
                    raise AttachmentError(f"the download link answered HTTP {r.status_code}")
                declared = r.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise AttachmentError(f"{declared} bytes", "too_large")
                data = bytearray()
                async for block in r.aiter_bytes():
                    data += block
                    if len(data) > max_bytes:
                        raise AttachmentError(f"more than {max_bytes} bytes", "too_large")
        except httpx.HTTPError as exc:
            raise AttachmentError(f"the download failed: {type(exc).__name__}", "network") from exc
        log.info("file of %s downloaded: %d bytes", message.message_id, len(data))
        return bytes(data)
