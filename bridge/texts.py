"""Every sentence a chat user can see, in one place, so the bridge speaks with one voice and a
translation or a wording change is one edit. Platform adapters render these; they never write
their own user-facing prose. (Log lines and operator messages are not here.)"""

from __future__ import annotations

from typing import Any

MAX_INPUT_CHARS = 8000  # the longest question sent to Moveworks

# --- questions that cannot be asked ----------------------------------------------------------------
EMPTY_QUESTION = "It looks like your message was empty. What can I help you with?"
TOO_LONG = (
    f"That message is too long for me to send to the assistant (the limit is {MAX_INPUT_CHARS:,} "
    "characters). Could you shorten it, or ask about one part at a time?"
)
NO_IDENTITY = (
    "I couldn't match your chat account to an employee email, so I can't ask the assistant on "
    "your behalf. Please contact your IT team."
)
FILES_ONLY = (
    "I can't pass files on to the assistant here, so I couldn't look at that. "
    "Could you type your question instead?"
)
FILE_TOO_BIG = "{name} is too large for me to pass on (the limit is {limit} MB), so I asked without it."
FILE_UNREADABLE = "I couldn't read {name}, so I asked without it."
FILE_TYPE = "I can't pass on {name} (that kind of file isn't supported), so I asked without it."
ATTACHED_ONLY = "(attached: {names})"  # the question sent when an employee sends only files
FILES_NONE_USABLE = "I couldn't pass on your file, and there was no question with it. Could you type what you need?"

# --- answers that fail -----------------------------------------------------------------------------
BUSY = "The assistant is very busy right now. Please try again in a minute."
SIGN_IN_FAILED = "I couldn't sign in to the assistant for you just now. Please try again later."
ANSWER_FAILED = "Sorry, the assistant ran into a problem answering that. Please try again."
UNAVAILABLE = "Sorry, I can't reach the assistant right now. Please try again in a few minutes."
BUG = "Sorry, something went wrong on my side. Please try again."
RESTARTED = "I was restarted before I could finish this answer. Please ask again."
REQUEUED = "I'm restarting; your question is queued and will be answered in a moment."
TOO_SLOW = "Sorry, the assistant is taking too long to answer. Please try again in a little while."
STORE_DOWN = "Sorry, I can't take questions right now because of a problem on my side. Please try again later."
NO_ANSWER = "I couldn't find an answer to that. Could you try rephrasing your question?"
FAILURE_NOTE = "⚠️ {message}"  # how a failure message ends a reply

# --- buttons ---------------------------------------------------------------------------------------
NOT_OWNER = "That button belongs to someone else's conversation, so only they can use it."
CALLBACK_GONE = "That button has expired. Please ask your question again."
ACTION_ALREADY_RUN = "You already used that button, so I didn't run it again."

# --- forms (Moveworks MODAL_ACTION) and the get-help menu ----------------------------------------
FORM_LOADING = "Loading the form…"
FORM_SUBMIT = "Submit"
FORM_CANCEL = "Cancel"
FORM_CLOSE = "Close"
FORM_UPDATE = "Update form"
FORM_SUBMITTING = "Submitting…"
FORM_DEFAULT_TITLE = "Form"
FORM_NOT_OWNER = "This form belongs to someone else's conversation, so only they can open it."
FORM_GONE = "That form is no longer available. Please ask again and I'll offer a fresh one."
FORM_FAILED = "Sorry, I couldn't open that form right now. Please try again in a moment."
FORM_SUBMIT_FAILED = "Sorry, I couldn't send the form just now. Your answers are still here: please try again."
FORM_REQUIRED = "Please fill this in."
FORM_BAD_DATE = "Please enter a valid date."
FORM_BAD_DATETIME = "Please enter a valid date and time."
FORM_BAD_CHOICE = "Please pick one of the options."
FORM_FILE_FAILED = "I couldn't upload this file. Please try another one."
FORM_SUBMITTED = "Submitted."
FORM_RECEIPT = "✓ {receipt}"
FORM_ELSEWHERE = "{label}: this form opens in Slack or Microsoft Teams."
FORM_FILE_HINT = "Attach the file in the chat instead: files can't be added to this form."
HELP_MENU = "More help options"
HELP_PICK = "Choose…"
HELP_NOT_OWNER = "This menu belongs to someone else's conversation, so only they can use it."

# --- stopping and thread context -------------------------------------------------------------------
STOPPED = "Stopped."
THREAD_CONTEXT = "Earlier messages in this chat thread:\n{context}\n\nMy question: {question}"
THREAD_CONTEXT_BOT = "(assistant)"  # marks the bot's own messages in the context

# --- live agents -----------------------------------------------------------------------------------
LIVE_AGENT = "Agent"
LIVE_AGENT_BYLINE = "{name} (agent)"
LIVE_CONNECTING = "Your message was passed on. Replies will appear here."
LIVE_SENT = "✓ Sent to {name}."
LIVE_SENT_ANON = "✓ Sent."

# --- feedback --------------------------------------------------------------------------------------
FEEDBACK_THANKS_HELPFUL = "Thanks for the feedback!"
FEEDBACK_THANKS_UNHELPFUL = "Thanks, that helps the assistant improve."
FEEDBACK_NOT_OWNER = "Only the person who asked can rate this answer."
FEEDBACK_UNAVAILABLE = "Feedback isn't available for this answer."
FEEDBACK_FAILED = "Sorry, I couldn't record your feedback right now. Please try again later."
FEEDBACK_QUESTION = "Was this helpful?"
HELPFUL = "Helpful"
NOT_HELPFUL = "Not helpful"
HELPFUL_LABEL = "This answer was helpful"
NOT_HELPFUL_LABEL = "This answer was not helpful"

# --- progress --------------------------------------------------------------------------------------
THINKING = "Thinking"
SLACK_THINKING_STATUS = "is thinking…"  # Slack shows it after the app's name
WRITING = "Writing the answer"
STATUS_LINE = "_⏳ {status}…_"  # an edited reply's progress line (Markdown)
CURSOR = " ▍"  # the end of a growing answer

# --- notifications and pointers --------------------------------------------------------------------
TRUNCATED = "\n\n_…(message truncated)_"
DM_POINTER = "📬 I've sent my answer to you in a direct message."
SOURCES = "Sources"
ACTIONS = "Actions"
ANSWER_PREVIEW = "Answer"  # notification text of an answer that has only buttons


def attached_only(files: tuple[Any, ...]) -> str:
    return ATTACHED_ONLY.format(names=", ".join(f.name or "file" for f in files)) if files else ""


def with_thread_context(question: str, context: str) -> str:
    """The question with the thread it was asked in, kept within MAX_INPUT_CHARS by dropping
    the oldest context first."""
    if not context.strip():
        return question
    room = MAX_INPUT_CHARS - len(THREAD_CONTEXT.format(context="", question=question))
    if room <= 0:
        return question
    context = context.strip()
    if len(context) > room:
        context = "…" + context[len(context) - room + 1:]
    return THREAD_CONTEXT.format(context=context, question=question)


def form_receipt(receipt: str | None) -> str:
    return FORM_RECEIPT.format(receipt=(receipt or "").strip() or FORM_SUBMITTED)


def failure_note(message: str) -> str:
    return FAILURE_NOTE.format(message=message)


def status_line(status: str | None) -> str:
    return STATUS_LINE.format(status=status or THINKING)


# --- the terminal (`moveworks-bridge chat`) --------------------------------------------------------
CONSOLE_STATUS = "⏳ {status}…"
CONSOLE_FAILURE = "⚠️  {message}"  # two spaces: terminals draw the emoji wide
CONSOLE_NEW_MESSAGE = "📣 New message from the assistant:"
CONSOLE_ACTION_HINT = "type /action {n}"
CONSOLE_RATE_HINT = "Was this helpful? Type /good or /bad."


# --- Slack's install page (a workspace outside SLACK_ALLOWED_TEAMS) -------------------------------
SLACK_INSTALL_REFUSED_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Installation not allowed</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h2>This Slack workspace can't install this app</h2>
<p>This Moveworks bridge only serves the Slack workspaces its administrator approved, and
{who} is not one of them. The installation was not kept.</p>
<p>If this workspace should be served, ask the bridge's administrator to add <code>{team}</code>
to <code>SLACK_ALLOWED_TEAMS</code>, then install again.</p>
</body></html>
"""


# --- Slack: forms in modals ------------------------------------------------------------------------
SLACK_FREE_INPUT_LABEL = "{label}: something else"  # the text box under a menu that allows free input
SLACK_FREE_INPUT_HINT = "Not in the list? Type it here instead."
SLACK_FREE_INPUT_HINT_MULTI = "Not in the list? Type it here (separate several with commas)."
SLACK_FORM_DOWNLOAD = "Download"
SLACK_YES = "Yes"
SLACK_NO = "No"
SLACK_FORM_RETRY = "Slack took too long to open that form. Please press the button again."


# --- Microsoft Teams (forms as dialogs) ------------------------------------------------------------
TEAMS_FORM_OTHER = "Or type your own…"  # the text box under a list that also takes typed values
TEAMS_FORM_TIME = "Time ({zone})"  # the time half of a date-and-time field, in the person's zone
TEAMS_FORM_SLOW = "The form is taking a while to load. Please press the button again in a moment."
TEAMS_FORM_STILL_SUBMITTING = "Still submitting… I'll post the outcome in this chat."
TEAMS_FORM_LATE_ERRORS = "Your form wasn't sent: {errors} Please open the form again to fix this."


# --- Teams agent surface ---------------------------------------------------------------------------
TEAMS_WELCOME_TITLE = "👋 Hi, I'm your AI assistant"
TEAMS_WELCOME = (
    "Ask me what you would ask IT or HR: I find answers in your company's knowledge, help with "
    "requests such as software access or a new laptop, fill in forms with you and tell you here "
    "when your requests move. In a channel or group chat, @mention me."
)
TEAMS_WELCOME_TRY = "Try one of these, or type your own question:"
TEAMS_CONTEXT_OTHER_BOT = "{name} (bot)"  # another app's message in the thread context
TEAMS_SOMEONE = "Someone"  # a thread participant Graph gives no name for


# --- Slack agent surface ---------------------------------------------------------------------------
SLACK_PROMPTS_TITLE = "Try asking"  # above the suggested prompts of the Messages tab
SLACK_PLAN_TITLE = "Working on your question"  # the plan that shows the assistant's reasoning steps
SLACK_CONTEXT_OTHER_BOT = "{name} (bot)"  # another app's message in the thread context
SLACK_SOMEONE = "Someone"  # a thread participant whose name could not be looked up
# the comment modal a 👍/👎 opens (titles and buttons: at most 24 characters)
SLACK_FEEDBACK_TITLE = "Feedback"
SLACK_FEEDBACK_SEND = "Send"
SLACK_FEEDBACK_SKIP = "Skip"
SLACK_FEEDBACK_ASK_HELPFUL = "👍 Thanks! Anything you'd like to add?"
SLACK_FEEDBACK_ASK_UNHELPFUL = "👎 Sorry about that. What was wrong or missing?"
SLACK_FEEDBACK_COMMENT = "Comment (optional)"
SLACK_FEEDBACK_HINT = "Your rating is recorded either way; the comment goes with it to the assistant's team."
SLACK_FEEDBACK_SENDING = "Sending your feedback…"
# per-channel rules (`/moveworks channel …`)
SLACK_CHANNEL_MODES = {
    "all": "answer every new message in this channel",
    "mention": "answer when someone mentions me",
    "private": "answer privately in a direct message, with a button to share the answer here",
    "off": "don't answer in this channel",
}
SLACK_CHANNEL_MODE_NOW = "In this channel I {behaviour}."
SLACK_CHANNEL_MODE_SET = "Done: in this channel I now {behaviour}."
SLACK_COMMAND_USAGE = (
    "Usage: `{command} channel` shows how I behave in this channel; `{command} channel all|mention|private|off` "
    "changes it (workspace admins and owners)."
)
SLACK_COMMAND_ADMINS_ONLY = "Only workspace admins and owners can change how I behave in a channel."
SLACK_COMMAND_IN_CHANNEL = "Use this command in the channel you want to set up."
SLACK_COMMAND_FAILED = "Sorry, I couldn't check that just now. Please try again in a moment."
SLACK_CHANNEL_OFF = "I'm switched off in this channel. You can ask me in a direct message."
SLACK_PRIVATE_POINTER = "🔒 I'm answering you privately, in our direct messages."
SLACK_SHARE_PROMPT = "Share this answer in {channel}?"
SLACK_SHARE_BUTTON = "Share in channel"
SLACK_SHARED = "✓ Shared in {channel}."
SLACK_SHARED_BY = "Shared by {user} from a private answer."
SLACK_SHARE_GONE = "That answer can no longer be shared. Please ask again in the channel."
SLACK_SHARE_FAILED = "I couldn't post in {channel}. Am I still a member there?"
SLACK_SHARE_NOT_YOURS = "Only the person who asked can share this answer."
# the App Home tab
SLACK_HOME_TITLE = "Your AI assistant"
SLACK_HOME_ABOUT = (
    "Ask me what you would ask IT or HR: I find answers in your company's knowledge, help with requests "
    "such as software access or a new laptop, fill in forms with you, and tell you here when your requests "
    "move. Write to me in the *Messages* tab, or mention me in a channel."
)
SLACK_HOME_TRY = "*Try asking*"
SLACK_HOME_NOTIFICATIONS = "*Your recent notifications*"
SLACK_HOME_NO_NOTIFICATIONS = "Nothing yet: updates on your requests will show up here."
SLACK_NOTIFICATION_STATUS = {
    "sent": "delivered",
    "skipped": "not delivered",
    "retry": "delivery being retried",
    "claimed": "being delivered",
    "new": "waiting",
}
SLACK_PRIVACY_NOTE = (
    "🔒 Privacy: your questions, and the messages of a thread you bring me into, are sent to the company's "
    "Moveworks assistant as you, to answer you. Your ratings and comments go to the team that runs it."
)
SLACK_HOME_ASKED = "You asked: {prompt}"  # posted in the DM when a prompt is picked on the Home tab
