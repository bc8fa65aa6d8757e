"""A file sent to the robot, fetched by the real client (connector/dingtalk/files.py) from the emulator's
/v1.0/robot/messageFiles/download and the temporary link it hands out: token, permission, size limit, expiry."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from connector.dingtalk.files import DOWNLOAD_API, DingTalkFiles
from connector.dingtalk.message import parse_chatbot_message
from connector.skills.base import AttachmentError
from connector.skills.knowledge_base import SAMPLES

from ..sandbox.helpers import new_app, send
from .helpers import calls_of, dingtalk_api

PDF = (SAMPLES / "meridian-maintenance-handbook.pdf").read_bytes()


def file_message(emulator, client_id: str, data: bytes, name: str = "handbook.pdf"):
    sent = send(emulator, client_id, "", user="filer01", msgtype="file", file_name=name,
                file_base64=base64.b64encode(data).decode())
    return parse_chatbot_message(sent["data"], "delivery", 0.0)


async def test_the_file_comes_through_the_robot_file_api_and_its_link(emulator, http, app) -> None:
    message = file_message(emulator, app[0], PDF)
    assert message.attachment.name == "handbook.pdf"
    files = DingTalkFiles(dingtalk_api(emulator, http, *app), app[0], http)
    assert await files.download(message, 1 << 20) == PDF
    (call,) = calls_of(emulator, app[0], DOWNLOAD_API)
    assert call["status"] == 200 and call["body"]["robotCode"] == app[0] and call["body"]["downloadCode"]
    assert call["answer"]["downloadUrl"].startswith(emulator.url + "/sandbox/files/")

    with pytest.raises(AttachmentError) as too_large:  # stopped at the limit, not read to the end
        await files.download(message, len(PDF) - 1)
    assert too_large.value.reason == "too_large"

    url = await files.download_url(message)
    for token in list(emulator.sandbox.file_links):  # the temporary link runs out
        emulator.sandbox.file_links[token] = (emulator.sandbox.file_links[token][0], 0.0)
    assert (await http.get(url)).status_code == 403
    assert (await files.download(message, 1 << 20)) == PDF  # a new link is asked for each download


async def test_refusals_are_attachment_errors(emulator, http, app) -> None:
    message = file_message(emulator, app[0], b"hello")
    other = new_app(emulator)  # another app's robot cannot fetch this app's files
    with pytest.raises(AttachmentError, match="400 invalidParameter.downloadCode"):
        await DingTalkFiles(dingtalk_api(emulator, http, *other), other[0], http).download(message, 1000)
    no_code = dataclasses.replace(message, platform_extras=None)
    with pytest.raises(AttachmentError, match="no download code"):
        await DingTalkFiles(dingtalk_api(emulator, http, *app), app[0], http).download(no_code, 1000)
    # the robot's permission (qyapi_robot_sendmsg) is what the download needs
    unpermitted = new_app(emulator, scopes=["Card.Instance.Write", "Card.Streaming.Write"])
    message = file_message(emulator, unpermitted[0], b"hello")
    with pytest.raises(AttachmentError, match="403 Forbidden.AccessDenied.AccessTokenPermissionDenied"):
        await DingTalkFiles(dingtalk_api(emulator, http, *unpermitted), unpermitted[0], http).download(message, 1000)
