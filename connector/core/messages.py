"""Every text the assistant's users see, in Chinese and English, in one place.

An entry is a ``Text``: its Chinese and its English wording, and how the chat shows the two (two paragraphs,
two lines, inline as "中文 / English", or one of them only: short titles and fragments of a Chinese sentence
show the Chinese, the technical lines of /test and /kb the English). Placeholders are ``str.format`` fields;
a value that is itself a ``Text`` is put in each language's own wording. Values that come from the settings
(the context's lifetime, the message length limit) are passed in by the code that formats the entry, e.g.
``HELP_INTRO(ttl=duration(settings.context_ttl_s))``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

PARAGRAPHS = "{zh}\n\n{en}"
LINES = "{zh}\n{en}"
INLINE = "{zh} / {en}"
EN_FIRST = "{en} / {zh}"
ZH = "{zh}"
EN = "{en}"


@dataclass(frozen=True)
class Text:
    zh: str
    en: str
    layout: str = PARAGRAPHS

    def __call__(self, **values: Any) -> str:
        """The entry as the chat shows it."""
        return self.layout.format(zh=self.language("zh", **values), en=self.language("en", **values))

    def language(self, lang: str, **values: Any) -> str:
        """One language's wording, formatted; ``Text`` values in the same language."""
        own = {k: v.language(lang) if isinstance(v, Text) else v for k, v in values.items()}
        return (self.zh if lang == "zh" else self.en).format(**own)

    def bind(self, **values: Any) -> Text:
        """The entry with its placeholders filled in, each language in its own wording (same layout)."""
        return Text(self.language("zh", **values), self.language("en", **values), self.layout)

    @property
    def fields(self) -> set[str]:
        """The placeholders of either language."""
        return {name for text in (self.zh, self.en) for _, name, _, _ in string.Formatter().parse(text) if name}


# values put into other entries
SECONDS = Text("{count} 秒", "{count} second{s}", INLINE)
MINUTES = Text("{count} 分钟", "{count} minute{s}", INLINE)
HOURS = Text("{count} 小时", "{count} hour{s}", INLINE)
MEDIA = {"picture": Text("图片", "pictures", INLINE), "file": Text("文件", "files", INLINE),
         "video": Text("视频", "videos", INLINE)}


def duration(seconds: float) -> Text:
    """A settings value in seconds in words: 1800 -> 30 分钟 / 30 minutes."""
    whole = int(seconds)
    unit, count = (HOURS, whole // 3600) if whole and whole % 3600 == 0 else \
        (MINUTES, whole // 60) if whole and whole % 60 == 0 else (SECONDS, whole)
    return unit.bind(count=count, s="" if count == 1 else "s")


def either(zh_items: list[str], en_items: list[str] | None = None) -> Text:
    """A list in each language's own way: a、b、c / a, b, c."""
    return Text("、".join(zh_items), ", ".join(en_items if en_items is not None else zh_items))


# notices (the dispatcher, the middlewares)
RESTARTING = Text("服务正在重启，请稍后重新提问。", "The assistant is restarting; please ask again in a moment.")
BUSY = Text("当前排队的消息太多，请稍后再试。", "Too many messages are waiting right now; please try again shortly.")
QUEUED = Text("排队中，前面还有 {ahead} 条", "Queued, {ahead} ahead of you", INLINE)  # the card while waiting
QUEUED_LONG = Text("消息已收到，正在排队：前面还有 {ahead} 条，预计需要等待约 {wait}。",
                   "Got it; you are in the queue: {ahead} ahead of you, an expected wait of about {wait}.")
SHED = Text("当前提问的人很多，预计需要等待约 {wait}，请稍后再试。",
            "Many people are asking right now: the expected wait is about {wait}. Please try again a little later.")
ALREADY_HANDLED = Text("这条消息已处理过。", "This message was already handled.")
USER_NOT_ALLOWED = Text("抱歉，您暂未开通此助手的使用权限，请联系管理员。",
                        "Sorry, this assistant is not enabled for you yet; please contact your administrator.")
GROUP_NOT_ALLOWED = Text("抱歉，此群暂未开通助手。", "Sorry, the assistant is not enabled in this group.")
TOO_FAST = Text("您发送得太快了，请稍等片刻再试。",
                "You are sending messages a little too fast; please wait a moment and try again.")
UNSUPPORTED = Text("暂不支持处理{kind}，请发送文字消息。", "Sorry, I cannot read {kind} yet; please send text.")
TEXT_ONLY = Text("这个模型只能阅读文字，看不了{kind}。请用文字描述您的问题{files}。",
                 "This model reads text only: it cannot look at {kind}. Please describe it in words{files}.")
TEXT_ONLY_FILES = Text("，或发送 PDF、Word、文本文件", ", or send a PDF, Word or text file", INLINE)
EMPTY = Text("请问有什么可以帮您？", "How can I help you?")
TOO_LONG = Text("消息太长了（{length} 字），请控制在 {limit} 字以内。",
                "Your message is too long ({length} characters); the limit is {limit}.")

# quotas (core/quota.py, /quota): {what} is QUOTA_MESSAGES or QUOTA_TOKENS, {reset} e.g. "00:00 (Asia/Shanghai)"
QUOTA_EXCEEDED = Text("今日额度已用完（{what}），将于 {reset} 重置。发送 /quota 查看用量。",
                      "You have used up today's allowance ({what}); it resets at {reset}. Send /quota to see "
                      "your usage.")
QUOTA_DEPARTMENT_EXCEEDED = Text("您所在部门今日的额度已用完（{what}），将于 {reset} 重置。",
                                 "Your department has used up today's allowance ({what}); it resets at {reset}.")
QUOTA_MESSAGES = Text("{count} 条消息", "{count} messages", INLINE)
QUOTA_TOKENS = Text("{count} 个 token", "{count} tokens", INLINE)
QUOTA_COMMAND = Text("今日额度与用量", "today's allowance and usage", INLINE)
QUOTA_TITLE = Text("额度", "Quota", INLINE)
QUOTA_HEADING = Text("今日用量", "Usage today", INLINE)
QUOTA_YOU = Text("您", "You", INLINE)
QUOTA_DEPARTMENT = Text("部门 {department}", "Department {department}", INLINE)
QUOTA_MESSAGES_LABEL = Text("消息", "messages", INLINE)
QUOTA_TOKENS_LABEL = Text("token 数", "tokens", INLINE)
QUOTA_NO_LIMIT = Text("不限", "no limit", INLINE)
QUOTA_RESETS = Text("将于 {reset} 重置", "resets at {reset}", INLINE)
QUOTA_EXEMPT = Text("管理员不受额度限制。", "Administrators have no quota.", INLINE)
QUOTA_OFF = Text("未设置每日额度。", "No daily quotas are set.", INLINE)

# answers from the model
MODEL_FAILED = Text("抱歉，模型服务暂时不可用，请稍后再试。",
                    "Sorry, the model service is unavailable right now; please try again in a moment.")
SOURCES = Text("来源", "Sources", INLINE)
SOURCE_QUOTE = Text("{source}：“{quote}”", '{source}: "{quote}"', ZH)  # a cited file and the sentence that answers
REPLY_TITLE = Text("回复", "Reply", ZH)
REPLY_INTERRUPTED = Text("回复中断", "reply interrupted", "（{zh} / {en}）")

# /help
HELP_TITLE = Text("帮助", "Help", INLINE)
HELP_HEADING = Text("私有助手", "Private assistant", INLINE)
HELP_INTRO = Text("直接提问即可，我会记住本次会话的上下文（{ttl}）。", "Ask anything; I remember this conversation for {ttl}.",
                  LINES)
HELP_ALIASES = Text("（或 {aliases}）", " (or {aliases})", ZH)
HELP_LINE = Text("- `{command}`{aliases}：{text}", "- `{command}`{aliases}: {text}", ZH)
HELP_SKILLS = Text("技能", "Skills", INLINE)
HELP_COMMAND = Text("显示本帮助", "this help", INLINE)

# /reset
RESET_COMMAND = Text("清空上下文", "start over", INLINE)
RESET_DONE = Text("好的，已开始新的会话。", "Done: the conversation starts afresh.")
RESET_TITLE = Text("新会话", "New conversation", ZH)

# /test
STATUS_COMMAND = Text("版本与模型状态", "version and model status", INLINE)
STATUS_TITLE = Text("状态", "Status", INLINE)
STATUS_HEADING = Text("连接正常", "Connector OK", INLINE)
STATUS_CONNECTOR = Text("连接器：{version}（Python {python}，{platform} Stream 模式）",
                        "connector: {version} (Python {python}, {platform} Stream mode)", EN)
STATUS_MODEL = Text("模型：{model}", "model: {model}", EN)
STATUS_MODEL_UNAVAILABLE = Text("不可用（{error}）", "unavailable ({error})", EN)
STATUS_SERVER = Text("推理服务：{health}", "inference server: {health}", EN)
STATUS_SERVER_VERSION = Text("，版本 {version}，引擎 {engine}，设备 {device}",
                             ", version {version}, engine {engine}, device {device}", EN)
STATUS_SKILLS = Text("技能：{names}", "skills: {names}", EN)
NONE = Text("无", "none", EN)

# the knowledge base
KB_DESCRIPTION = Text("根据公司文档回答并注明出处", "answers from the company's documents and cites them", EN_FIRST)
KB_LIST_COMMAND = Text("知识库文档列表", "documents in the knowledge base", INLINE)
KB_REINDEX_COMMAND = Text("（管理员）立即重新索引", "(admins) re-index now", INLINE)
KB_TITLE = Text("知识库", "Knowledge base", INLINE)
KB_TITLE_SHORT = Text("知识库", "Knowledge base", ZH)
KB_ADMINS_ONLY = Text("只有管理员可以重新索引。", "Only administrators can re-index.")
KB_REINDEXED = Text("重新索引完成", "Re-indexed: {summary}", INLINE)
KB_NOT_RUNNING = Text("知识库未启动。", "The knowledge base is not running.")
KB_EMPTY = Text("知识库中还没有文档。", "The knowledge base holds no documents yet.")
KB_DOCUMENTS = Text("{count} 个文档", "{count} documents", EN)
KB_CHUNKS = Text("{count} 个片段", "{count} chunks", EN)
KB_MORE = Text("… 还有 {count} 个", "… {count} more", EN)
KB_UNREADABLE = Text("无法读取", "Unreadable", INLINE)
KB_RESTRICTED_LEFT_OUT = Text("某些受限文档未使用，请私聊我。",
                              "Some restricted documents were left out; ask me in a direct message.")

# files sent to the bot (connector/skills/files/): {name} the file name, {limit} e.g. "20 MB"
FILES_DESCRIPTION = Text("私聊发送 PDF、Word、文本文件，即可就文件内容提问（会话结束后删除）",
                         "send a PDF, Word or text file in a direct message and ask about it (deleted when the "
                         "conversation's context expires)", EN_FIRST)
FILES_TITLE = Text("文件", "File", ZH)
FILES_RECEIVED = Text("已收到《{name}》（{size}），可以就它提问了。它会保留 {ttl}（发送 /reset 立即删除）。",
                      "Got {name} ({size}); ask me about it. I keep it for {ttl} (/reset deletes it now).")
FILES_PAGES = Text("{count} 页", "{count} page{s}", INLINE)
FILES_PARTS = Text("{count} 段", "{count} part{s}", INLINE)
FILES_TRUNCATED = Text("文件较长，只读取了前 {count} 段。", "It is long: only its first {count} parts were read.")
FILES_IN_GROUP = Text("为保护隐私，文件只在私聊中阅读：请在与我的单聊中发送。",
                      "Files are read in direct messages only: please send it to me in a one-to-one chat.")
FILES_TYPE = Text("暂不支持《{name}》这种文件。支持的类型：{types}。",
                  "I cannot read {name}: the supported types are {types}.")
FILES_TOO_LARGE = Text("《{name}》太大了（上限 {limit}），请发送较小的文件或其中的相关部分。",
                       "{name} is too large (the limit is {limit}); please send a smaller file or the part that "
                       "matters.")
FILES_UNREADABLE = Text("《{name}》无法读取（{reason}）。", "I could not read {name} ({reason}).")
FILES_DOWNLOAD_FAILED = Text("《{name}》下载失败，请稍后重新发送。",
                             "{name} could not be downloaded; please send it again in a moment.")
FILES_FAILED = Text("抱歉，《{name}》暂时无法处理，请稍后重试。", "Sorry, I could not process {name} just now; please try "
                                                          "again later.")
FILES_NO_TEXT = Text("没有文字内容（扫描件需要先做文字识别）", "it holds no text; a scanned PDF needs OCR first",
                     INLINE)
FILES_ENCRYPTED = Text("文件已加密", "it is encrypted", INLINE)
FILES_DAMAGED = Text("文件已损坏或格式不符", "it is damaged or not what its name says", INLINE)

# ops alerts (connector/alerts.py): Alertmanager's notifications in the ops group
ALERT_TITLE = Text("运维告警", "Ops alert", INLINE)
ALERT_FIRING = Text("告警", "FIRING", INLINE)
ALERT_RESOLVED = Text("已恢复", "RESOLVED", INLINE)
ALERT_VALUE = Text("当前值", "value", INLINE)
ALERT_RUNBOOK = Text("处理", "runbook", INLINE)
ALERT_SINCE = Text("开始于", "since", INLINE)
ALERT_MERGED = Text("告警过多：{count} 条通知合并为本条摘要（每分钟最多 {limit} 条）。",
                    "Too many alerts: {count} notifications merged into this summary (at most {limit} a minute).",
                    LINES)
