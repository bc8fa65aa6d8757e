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
