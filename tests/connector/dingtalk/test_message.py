from connector.dingtalk.message import DingTalkExtras, extras_of, parse_chatbot_message


def test_text_group_mention_space_stripped() -> None:
    m = parse_chatbot_message({"msgId": "m1", "msgtype": "text", "text": {"content": " hello"},
                               "conversationType": "2", "conversationId": "cid", "senderStaffId": "s1",
                               "senderNick": "S", "isInAtList": True, "sessionWebhook": "http://x",
                               "sessionWebhookExpiredTime": 123}, "d1", 0.0)
    assert (m.text, m.conversation_kind, m.message_id, m.delivery_id, m.mentioned) == ("hello", "group", "m1", "d1", True)
    assert extras_of(m) == DingTalkExtras(session_webhook="http://x", session_webhook_expires_ms=123)
    assert not extras_of(m).webhook_valid()  # expired long ago


def test_rich_text_and_audio() -> None:
    rich = parse_chatbot_message({"msgId": "m", "msgtype": "richText", "conversationType": "1", "content": {
        "richText": [{"text": "part one "}, {"type": "picture", "downloadCode": "x"}, {"text": "part two"}]}}, "d", 0)
    assert rich.text == "part one part two" and rich.supported
    audio = parse_chatbot_message({"msgId": "m", "msgtype": "audio", "content": {"recognition": "语音内容"}}, "d", 0)
    assert audio.text == "语音内容" and audio.supported
    picture = parse_chatbot_message({"msgId": "m", "msgtype": "picture", "content": {"downloadCode": "x"}}, "d", 0)
    assert not picture.supported


def test_settings_hide_secrets() -> None:
    from connector.settings import ConnectorSettings

    s = ConnectorSettings(client_id="app", client_secret="very-secret-appsecret", redis_url="redis://:pw123456@h:6379")
    assert "very-secret-appsecret" not in repr(s) and "pw123456" not in repr(s)
    assert set(s.secrets()) == {"very-secret-appsecret", "redis://:pw123456@h:6379"}


def test_file_picture_and_video_become_attachments_with_the_download_code_in_the_extras() -> None:
    # the payload as DingTalk delivers a file to the robot (docs/dingtalk-protocol-facts.md)
    file = parse_chatbot_message({"msgId": "m", "msgtype": "file", "conversationType": "1", "content": {
        "downloadCode": "code/+=", "fileId": "214980176385", "fileName": "Report 2025.PDF", "spaceId": "28455"}},
        "d", 0)
    assert file.attachment is not None and (file.attachment.kind, file.attachment.name) == ("file", "Report 2025.PDF")
    assert file.attachment.suffix == ".pdf" and file.text == "" and not file.supported
    assert extras_of(file).download_code == "code/+="
    assert "code/+=" not in repr(file)  # the download code opens the file: never in a log line
    picture = parse_chatbot_message({"msgId": "m", "msgtype": "picture", "content": {"downloadCode": "x"}}, "d", 0)
    video = parse_chatbot_message({"msgId": "m", "msgtype": "video", "content": {"downloadCode": "y",
                                                                                 "videoType": "mp4"}}, "d", 0)
    assert (picture.attachment.kind, video.attachment.kind) == ("picture", "video")
    text = parse_chatbot_message({"msgId": "m", "msgtype": "text", "text": {"content": "hi"}}, "d", 0)
    assert text.attachment is None and extras_of(text).download_code is None
