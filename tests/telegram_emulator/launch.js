'use strict';
// telegram-test-api 4.2.1 as the Bot API peer of tests/test_telegram.py.
//
//   node launch.js --port 9000 [--host 127.0.0.1] [--username CervantesTestBot]
//
// Prints "listening on http://HOST:PORT" once it accepts requests. The package alone does not
// carry python-telegram-bot 22: getMe lacks `is_bot`, sendMessage answers `date` in milliseconds,
// editMessageText answers null, sendChatAction/setMyCommands/getMyCommands/getWebhookInfo are
// missing (HTTP 500), and getUpdates ignores `offset` and `timeout` and marks updates read as
// soon as it answers, even to a long poll whose client has gone. The routes below go in front of
// the built-in ones and give those methods the Bot API's behaviour, errors included (400 "message
// is not modified", "message is too long", ...). Two client routes of ours help the test:
//   POST /calls    {token}                     every Bot API call the bot made, in order (with the
//                                              Host it was addressed to: `via`)
//   POST /failNext {token, method, error_code, description, retry_after, migrate_to_chat_id, times}
//                                              the bot's next `times` calls of `method` fail
//                                              with that error (429 + retry_after: RetryAfter;
//                                              400 + migrate_to_chat_id: ChatMigrated)
//   POST /flood    {token, on}                 flood-limit mode for that bot on or off (default off)
//   POST /floodStorm {token, chat_id, seconds, times}
//                                              a 429 storm: that chat's next `times` requests made
//                                              once its ban is over are each refused with a new
//                                              ban of `seconds` (as if other bots' traffic filled it)
//   POST /floodStats {token}                   what flood mode counted: requests, refused by scope,
//                                              sent_into_pending, longest ban
//   POST /hold {token, on}                     while on, that bot's requests that write to a chat
//                                              (FLOOD_METHODS) wait unanswered; off lets them in
//   POST /unconfirmed {token}                  the update_ids the bot has not confirmed yet (getUpdates
//                                              confirms an update only when a later call passes an
//                                              offset higher than its update_id)
//   POST /press {token, chat_id, message_id, data, user_id}
//                                              a user taps the inline button with that callback_data
//                                              on that bot message: a callback_query update; its id
//   POST /pressAnswers {token}                 each callback query: when made, how it was answered
//   POST /inlineQuery {token, user_id, query, offset, chat_type}
//                                              a user types "@bot query" in a chat: an inline_query
//                                              update; its id
//   POST /inlineAnswers {token}                each inline query: its text, when made, and its
//                                              answer (results, button, cache_time, is_personal, when)
//   POST /setMember {token, chat_id, chat_type, user_id, first_name, status, is_bot}
//                                              a user's (or the bot's) status in a group changes:
//                                              creator, administrator, member, left or kicked
//
// Members and admins (Bot API, "getChatAdministrators", "getChatMember", "ChatMember",
// "ChatMemberUpdated", Update's chat_member and my_chat_member): a user who writes in a group is a
// member of it; /setMember sets anyone's status. getChatAdministrators lists the creator and the
// administrators "which aren't bots", needs no admin rights, and in a private chat answers 400
// "there are no administrators in the private chat". getChatMember answers a user's status there
// ("left" for one never seen in the chat). A change of status is a ChatMemberUpdated: about the bot
// itself, a my_chat_member update; about anyone else, a chat_member update, which the Bot API sends
// only to a bot that is an administrator of that chat (and that asked for it in allowed_updates).
//
// Inline mode (Bot API, "Inline mode", "InlineQuery", "answerInlineQuery", "InlineQueryResultArticle",
// "InlineQueryResultsButton"; getMe says supports_inline_queries, as after BotFather's /setinline):
// a query's text is at most 256 characters. An inline query is answered once, within INLINE_ANSWER_S
// (Telegram's documentation gives no figure; its servers drop answers after about 10 s): later, or a
// second time, or an unknown id, is 400 "query is too old and response timeout expired or query ID is
// invalid". An answer holds at most 50 results, ids unique and 1-64 bytes; this emulator knows the
// article only, which needs a title and input_message_content.message_text of 1-4096 characters; a
// button needs its text and one of start_parameter (1-64 of A-Z, a-z, 0-9, _ and -) or web_app.
// cache_time (default 300) is a whole number of seconds >= 0.
//
// Inline keyboards (Bot API, "InlineKeyboardMarkup" and "editMessageText"): sendMessage,
// editMessageText and editMessageReplyMarkup take reply_markup (callback_data 1-64 bytes, else 400
// BUTTON_DATA_INVALID); a message's keyboard is part of it (the Message object returns it); an edit
// "is not modified" only when both text and keyboard are unchanged; and editMessageText without
// reply_markup removes the keyboard, as the real API does.
//
// Flood mode enforces the limits of the Bot API FAQ ("My bot is hitting limits, how do I avoid
// this?", core.telegram.org/bots/faq), on every request that writes to a chat (FLOOD_METHODS:
// sendMessage, editMessageText, editMessageReplyMarkup and sendChatAction; the FAQ counts edits like
// messages, and we count chat actions too, to be safe), each rule a scope of its own:
//   bot   "no more than 30 messages per second or so" across all chats: at most 30 in any 1 s window.
//   chat  "avoid sending more than one message per second" in a chat, "we may allow short bursts":
//         a bucket of CHAT_BURST (3) that refills one per second.
//   group "not able to send more than 20 messages per minute to the same group" (chat id < 0):
//         at most 20 in any 60 s window.
// Over a limit the answer is the Bot API's: HTTP 429 {"ok": false, "error_code": 429, "description":
// "Too Many Requests: retry after N", "parameters": {"retry_after": N}}, N the whole seconds until the
// scope frees, and the scope is banned until then. A request sent into a pending ban is refused too
// and makes the ban longer (twice what was left, at least one more second), as flood waits grow on
// the real API. Refused requests do not count against the windows.
const TelegramServer = require('telegram-test-api');
const { routes } = require('telegram-test-api/lib/routes/index');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = option('host', '127.0.0.1');
const port = Number(option('port', '9000'));
const BOT = {
  id: 6660001, is_bot: true, first_name: 'Cervantes', username: option('username', 'CervantesTestBot'),
  can_join_groups: true, can_read_all_group_messages: false, supports_inline_queries: true,
};
const MAX_TEXT = 4096;

const FLOOD_METHODS = new Set(['sendMessage', 'editMessageText', 'editMessageReplyMarkup', 'sendChatAction']);
const BOT_PER_SECOND = 30;
const CHAT_BURST = 3;
const GROUP_PER_MINUTE = 20;

// Updates of kinds the package does not know (callback_query made by /press, inline_query) are
// stored with `raw`, the Bot API's update body, and announced with 'AddedUpdate'.
const UPDATE_EVENTS = ['AddedUserMessage', 'AddedUserCommand', 'AddedUpdate'];

function formatUpdate(u) {
  if (u.raw) return { update_id: u.updateId, ...u.raw };
  const update = TelegramServer.formatUpdate(u);
  if (update.message) delete update.message.botToken;
  return update;
}

const NOT_MODIFIED = 'Bad Request: message is not modified: specified new message content and reply'
  + ' markup are exactly the same as a current content and reply markup of the message';
const CALLBACK_ANSWER_S = 15; // how long a callback query may wait for its answer
const queries = {}; // callback query id -> {token, at, answered: {at, text, show_alert} | null}
let nextQuery = 1;

// Bot API, getUpdates and setWebhook: `allowed_updates` lists the update types the bot receives; a
// call without it keeps the previous list; never given, every type but chat_member,
// message_reaction and message_reaction_count. Updates of other types are never delivered. (The API
// may still deliver unwanted updates made before the call; we drop those too, a little stricter.)
const allowedUpdates = {}; // token -> update types
const DEFAULT_EXCLUDED = new Set(['chat_member', 'message_reaction', 'message_reaction_count']);

function wanted(token, u) {
  const kind = Object.keys(formatUpdate(u)).find((k) => k !== 'update_id');
  const allowed = allowedUpdates[token];
  return allowed && allowed.length ? allowed.includes(kind) : !DEFAULT_EXCLUDED.has(kind);
}

const MAX_INLINE_QUERY = 256; // characters of an inline query's text
const INLINE_ANSWER_S = 10; // how long an inline query may wait for its answer
const MAX_INLINE_RESULTS = 50;
const inlineQueries = {}; // inline query id -> {token, query, user_id, at, answered: {at, results, ...} | null}
let nextInline = 1;

// What is wrong with an answerInlineQuery's results and button (the Bot API's error), or null.
function inlineProblem(results, button, cacheTime) {
  if (!Array.isArray(results)) return 'RESULTS_INVALID';
  if (results.length > MAX_INLINE_RESULTS) return 'RESULTS_TOO_MUCH';
  const ids = new Set();
  for (const r of results) {
    const id = r && r.id;
    if (typeof id !== 'string' || Buffer.byteLength(id) < 1 || Buffer.byteLength(id) > 64) return 'RESULT_ID_INVALID';
    if (ids.has(id)) return 'RESULT_ID_DUPLICATE';
    ids.add(id);
    if (r.type !== 'article') return 'RESULT_TYPE_INVALID';
    if (typeof r.title !== 'string' || !r.title.trim()) return 'RESULT_TITLE_EMPTY';
    const text = r.input_message_content && r.input_message_content.message_text;
    if (typeof text !== 'string' || !text.trim()) return 'MESSAGE_EMPTY';
    if (text.length > MAX_TEXT) return 'MESSAGE_TOO_LONG';
  }
  if (button !== undefined && button !== null && button !== '') {
    if (typeof button.text !== 'string' || !button.text.trim()) return 'BUTTON_TEXT_INVALID';
    const start = button.start_parameter;
    if (!button.web_app && (typeof start !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(start))) {
      return 'START_PARAM_INVALID';
    }
  }
  if (cacheTime !== undefined && !(Number.isInteger(cacheTime) && cacheTime >= 0)) return 'CACHE_TIME_INVALID';
  return null;
}

const knownChats = {}; // chat id -> the chat object of users' messages there
const calls = []; // {token, method, params, at}
const flood = {}; // token -> {bot: {sent, ban}, chats: {id: {tokens, at, ban, sent}}, stats}
const failures = []; // {token, method, error_code, description, parameters, times}
const commands = {}; // token -> scope type (default, all_group_chats, ...) -> BotCommand[]
const members = {}; // token -> chat id -> user id -> {status, user}
const ADMIN = new Set(['creator', 'administrator']);
const held = {}; // token -> [release, ...]: requests waiting while /hold is on for that bot

// Form fields arrive as strings; structured ones (commands, reply_markup) as JSON strings.
function param(body, name) {
  const value = body[name];
  if (typeof value !== 'string') return value;
  try { return JSON.parse(value); } catch (e) { return value; }
}

function fail(res, code, description, parameters) {
  res.status(code).json({ ok: false, error_code: code, description, ...(parameters ? { parameters } : {}) });
}

function seconds(millis) { return Math.floor(millis / 1000); }

function patchedRoutes(app, server) {
  server.setMaxListeners(1000); // one listener per waiting long poll

  // What a chat looks like, from the users' messages to it (the package answers 'private' always);
  // remembered, since getUpdates drops the messages it has delivered.
  function chatOf(chatId) {
    const seen = [...server.storage.userMessages].reverse()
      .find((u) => u.message && u.message.chat && String(u.message.chat.id) === String(chatId));
    if (seen) knownChats[String(chatId)] = seen.message.chat;
    return knownChats[String(chatId)] || { id: Number(chatId), type: 'private', first_name: 'Test' };
  }

  function findBotMessage(token, chatId, messageId) {
    return server.storage.botMessages.find((m) => m.botToken === token
      && String(m.message.chat_id) === String(chatId) && String(m.messageId) === String(messageId));
  }

  function asMessage(stored) {
    const out = {
      message_id: stored.messageId, from: BOT, chat: chatOf(stored.message.chat_id),
      date: seconds(stored.time), text: stored.message.text,
    };
    if (stored.editTime) out.edit_date = seconds(stored.editTime);
    if (stored.message.reply_markup) out.reply_markup = stored.message.reply_markup;
    if (stored.message.message_thread_id) { // sent in a forum topic: a message of that topic
      out.message_thread_id = Number(stored.message.message_thread_id);
      out.is_topic_message = true;
    }
    return out;
  }

  // A user's update of a kind the package does not know, as the Bot API would deliver it.
  async function addRaw(token, raw) {
    await server.addUserUpdate({ botToken: token, time: Date.now(), updateId: server.updateId,
      messageId: server.messageId, isRead: false, raw });
    server.emit('AddedUpdate');
  }

  // Bot API: an inline keyboard is an array of rows of buttons; callback_data is 1-64 bytes.
  function checkMarkup(res, markup) {
    if (markup === undefined || markup === null || markup === '') return true;
    const rows = markup.inline_keyboard;
    const ok = Array.isArray(rows) && rows.every((row) => Array.isArray(row) && row.every((b) => b
      && typeof b.text === 'string' && b.text.length > 0
      && (b.callback_data === undefined || (typeof b.callback_data === 'string'
        && Buffer.byteLength(b.callback_data) >= 1 && Buffer.byteLength(b.callback_data) <= 64))));
    if (!ok) fail(res, 400, 'Bad Request: BUTTON_DATA_INVALID');
    return ok;
  }

  function sameMarkup(a, b) { return JSON.stringify(a || null) === JSON.stringify(b || null); }

  function checkText(res, text) {
    if (typeof text !== 'string' || !text.trim()) { fail(res, 400, 'Bad Request: message text is empty'); return false; }
    if (text.length > MAX_TEXT) { fail(res, 400, 'Bad Request: message is too long'); return false; }
    return true;
  }

  // Flood mode: the refusal for this request, or null when it may go ahead (and it is counted).
  function floodCheck(token, method, chatId) {
    const f = flood[token];
    if (!f || !f.on || !FLOOD_METHODS.has(method) || chatId === undefined) return null;
    const now = Date.now();
    const key = String(chatId);
    const chat = f.chats[key] || (f.chats[key] = { tokens: CHAT_BURST, at: now, ban: 0, sent: [] });
    const group = Number(chatId) < 0;
    f.stats.requests += 1;
    // A request into a pending ban: refused, and the ban grows.
    for (const [scope, holder] of [['bot', f.bot], [group ? 'group' : 'chat', chat]]) {
      if (holder.ban > now) {
        holder.ban = now + Math.max(2 * (holder.ban - now), 1000);
        f.stats.sent_into_pending += 1;
        return refuse(f, scope, holder.ban - now);
      }
    }
    if (chat.storm && chat.storm.times > 0) {
      chat.storm.times -= 1;
      chat.ban = now + chat.storm.seconds * 1000;
      return refuse(f, group ? 'group' : 'chat', chat.ban - now);
    }
    f.bot.sent = f.bot.sent.filter((t) => now - t < 1000);
    chat.sent = chat.sent.filter((t) => now - t < 60000);
    chat.tokens = Math.min(CHAT_BURST, chat.tokens + (now - chat.at) / 1000);
    chat.at = now;
    if (f.bot.sent.length >= BOT_PER_SECOND) {
      f.bot.ban = f.bot.sent[0] + 1000;
      return refuse(f, 'bot', f.bot.ban - now);
    }
    if (group && chat.sent.length >= GROUP_PER_MINUTE) {
      chat.ban = chat.sent[chat.sent.length - GROUP_PER_MINUTE] + 60000;
      return refuse(f, 'group', chat.ban - now);
    }
    if (chat.tokens < 1) {
      chat.ban = now + (1 - chat.tokens) * 1000;
      return refuse(f, group ? 'group' : 'chat', chat.ban - now);
    }
    chat.tokens -= 1;
    chat.sent.push(now);
    f.bot.sent.push(now);
    return null;
  }

  function refuse(f, scope, millis) {
    const retryAfter = Math.max(1, Math.ceil(millis / 1000));
    f.stats.refused[scope] = (f.stats.refused[scope] || 0) + 1;
    f.stats.longest_ban_s = Math.max(f.stats.longest_ban_s, retryAfter);
    return retryAfter;
  }

  // A request on its way (POST /hold): the Bot API carries out a method when its request arrives
  // ("Making requests": each call is one HTTPS request, answered with its result), so a request
  // that never gets through does nothing. Held requests are let in when the hold ends; one whose
  // connection closed meanwhile (the bot was killed) never arrived, and nothing is posted.
  app.all('/bot:token/:method', (req, res, next) => {
    const { token, method } = req.params;
    if (!held[token] || !FLOOD_METHODS.has(method)) { next(); return; }
    let gone = false;
    res.on('close', () => { gone = true; });
    held[token].push(() => { if (!gone) next(); });
  });

  // Every bot call: record it, then fail it if the test asked for that, or if flood mode refuses it.
  app.all('/bot:token/:method', (req, res, next) => {
    const { token, method } = req.params;
    const params = { ...req.query, ...req.body };
    // `via`: the Host the call was addressed to. Not a Bot API behaviour, bookkeeping for the tests:
    // replicas of one bot given different addresses of this emulator (127.0.0.1, localhost) can
    // be told apart, as a bot's calls from two machines could be by their source address.
    if (method !== 'getUpdates') calls.push({ token, method, params, at: Date.now(), via: req.headers.host });
    const i = failures.findIndex((f) => f.token === token && f.method === method);
    if (i >= 0) {
      const f = failures[i];
      f.times -= 1;
      if (f.times <= 0) failures.splice(i, 1);
      fail(res, f.error_code, f.description, f.parameters);
      return;
    }
    const retryAfter = floodCheck(token, method, params.chat_id);
    if (retryAfter !== null) {
      fail(res, 429, `Too Many Requests: retry after ${retryAfter}`, { retry_after: retryAfter });
      return;
    }
    next();
  });

  app.all('/bot:token/getMe', (req, res) => res.json({ ok: true, result: BOT }));

  // Long polling as the Bot API does it: `offset` confirms (and drops) every earlier update,
  // nothing is marked read by being answered, and an empty answer waits up to `timeout` seconds.
  app.all('/bot:token/getUpdates', (req, res) => {
    const { token } = req.params;
    const body = { ...req.query, ...req.body };
    const offset = Number(body.offset || 0);
    const timeout = Math.min(Number(body.timeout || 0), 50);
    const limit = Math.max(1, Math.min(Number(body.limit || 100), 100));
    const allowed = param(body, 'allowed_updates');
    if (Array.isArray(allowed)) allowedUpdates[token] = allowed;
    if (offset > 0) {
      server.storage.userMessages = server.storage.userMessages
        .filter((u) => u.botToken !== token || u.updateId >= offset);
    }
    const pending = () => server.storage.userMessages
      .filter((u) => u.botToken === token && u.updateId >= offset && wanted(token, u))
      .slice(0, limit)
      .map(formatUpdate);
    const answer = () => res.json({ ok: true, result: pending() });
    if (timeout <= 0 || pending().length) { answer(); return; }
    let timer = null;
    const wake = () => {
      if (!pending().length) return;
      done();
      answer();
    };
    const done = () => {
      clearTimeout(timer);
      for (const event of UPDATE_EVENTS) server.off(event, wake);
    };
    for (const event of UPDATE_EVENTS) server.on(event, wake);
    timer = setTimeout(() => { done(); answer(); }, timeout * 1000);
    res.on('close', () => { if (!res.writableFinished) done(); }); // the client gave up waiting
  });

  app.all('/bot:token/sendMessage', (req, res) => {
    const { token } = req.params;
    if (!req.body.chat_id) { fail(res, 400, 'Bad Request: chat not found'); return; }
    if (!checkText(res, req.body.text)) return;
    const markup = param(req.body, 'reply_markup');
    if (!checkMarkup(res, markup)) return;
    const sent = server.addBotMessage({ ...req.body, reply_markup: markup || undefined }, token);
    const stored = findBotMessage(token, req.body.chat_id, sent.message_id);
    res.json({ ok: true, result: asMessage(stored) });
  });

  app.all('/bot:token/editMessageText', (req, res) => {
    const { token } = req.params;
    const stored = findBotMessage(token, req.body.chat_id, req.body.message_id);
    if (!stored) { fail(res, 400, 'Bad Request: message to edit not found'); return; }
    if (!checkText(res, req.body.text)) return;
    const markup = param(req.body, 'reply_markup') || undefined;
    if (!checkMarkup(res, markup)) return;
    if (stored.message.text === req.body.text && sameMarkup(stored.message.reply_markup, markup)) {
      fail(res, 400, NOT_MODIFIED);
      return;
    }
    // Bot API: an edit that leaves out reply_markup removes the message's inline keyboard.
    stored.message = { ...stored.message, text: req.body.text, reply_markup: markup };
    stored.editTime = Date.now();
    stored.edits = (stored.edits || 0) + 1;
    server.emit('EditedMessageText');
    res.json({ ok: true, result: asMessage(stored) });
  });

  app.all('/bot:token/editMessageReplyMarkup', (req, res) => {
    const { token } = req.params;
    const stored = findBotMessage(token, req.body.chat_id, req.body.message_id);
    if (!stored) { fail(res, 400, 'Bad Request: message to edit not found'); return; }
    const markup = param(req.body, 'reply_markup') || undefined;
    if (!checkMarkup(res, markup)) return;
    if (sameMarkup(stored.message.reply_markup, markup)) { fail(res, 400, NOT_MODIFIED); return; }
    stored.message = { ...stored.message, reply_markup: markup };
    stored.editTime = Date.now();
    res.json({ ok: true, result: asMessage(stored) });
  });

  // A user taps an inline button: the callback_query update. Only a button the message shows can
  // be pressed (a client shows no other). The query must be answered (answerCallbackQuery) within
  // CALLBACK_ANSWER_S, once: later, or twice, the Bot API answers 400 "query is too old and
  // response timeout expired or query ID is invalid".
  app.post('/press', async (req, res) => {
    const { token, chat_id: chatId, message_id: messageId, data } = req.body;
    const stored = findBotMessage(token, chatId, messageId);
    const buttons = stored && stored.message.reply_markup ? stored.message.reply_markup.inline_keyboard.flat() : [];
    if (!buttons.some((b) => b.callback_data === data)) { fail(res, 400, 'no such button on that message'); return; }
    const id = String(nextQuery++);
    const user = { id: Number(req.body.user_id || 501), is_bot: false, first_name: 'Alonso' };
    queries[id] = { token, at: Date.now(), answered: null };
    await addRaw(token, { callback_query: {
      id, from: user, message: asMessage(stored), chat_instance: `ci${chatId}`, data } });
    res.json({ ok: true, result: id });
  });

  // A callback or inline query the bot may still answer: its own, not answered yet, within `seconds`;
  // null once the Bot API's refusal is sent.
  function openQuery(res, table, id, token, seconds) {
    const query = table[String(id)];
    if (!query || query.token !== token || query.answered || Date.now() - query.at > seconds * 1000) {
      fail(res, 400, 'Bad Request: query is too old and response timeout expired or query ID is invalid');
      return null;
    }
    return query;
  }

  app.all('/bot:token/answerCallbackQuery', (req, res) => {
    const query = openQuery(res, queries, req.body.callback_query_id, req.params.token, CALLBACK_ANSWER_S);
    if (!query) return;
    query.answered = { at: Date.now(), text: req.body.text, show_alert: param(req.body, 'show_alert') };
    res.json({ ok: true, result: true });
  });

  app.post('/pressAnswers', (req, res) => res.json({ ok: true, result: Object.fromEntries(
    Object.entries(queries).filter(([, q]) => q.token === req.body.token)) }));

  // Inline mode: see the header for the rules each check models.
  app.post('/inlineQuery', async (req, res) => {
    const { token } = req.body;
    const query = req.body.query === undefined ? '' : String(req.body.query);
    if ([...query].length > MAX_INLINE_QUERY) { fail(res, 400, 'a client sends at most 256 characters'); return; }
    const id = String(nextInline++);
    const user = { id: Number(req.body.user_id || 501), is_bot: false, first_name: 'Alonso' };
    inlineQueries[id] = { token, query, user_id: user.id, at: Date.now(), answered: null };
    await addRaw(token, { inline_query: {
      id, from: user, query, offset: String(req.body.offset || ''), chat_type: req.body.chat_type || 'private' } });
    res.json({ ok: true, result: id });
  });

  app.all('/bot:token/answerInlineQuery', (req, res) => {
    const query = openQuery(res, inlineQueries, req.body.inline_query_id, req.params.token, INLINE_ANSWER_S);
    if (!query) return;
    const results = param(req.body, 'results');
    const problem = inlineProblem(results, param(req.body, 'button'), param(req.body, 'cache_time'));
    if (problem) { fail(res, 400, `Bad Request: ${problem}`); return; }
    query.answered = {
      at: Date.now(), results, button: param(req.body, 'button') || null,
      cache_time: req.body.cache_time === undefined ? 300 : Number(req.body.cache_time),
      is_personal: param(req.body, 'is_personal') === true, next_offset: req.body.next_offset || '',
    };
    res.json({ ok: true, result: true });
  });

  app.post('/inlineAnswers', (req, res) => res.json({ ok: true, result: Object.fromEntries(
    Object.entries(inlineQueries).filter(([, q]) => q.token === req.body.token)) }));

  app.all('/bot:token/sendChatAction', (req, res) => {
    if (!req.body.chat_id) { fail(res, 400, 'Bad Request: chat not found'); return; }
    if (!req.body.action) { fail(res, 400, 'Bad Request: wrong parameter action in request'); return; }
    res.json({ ok: true, result: true });
  });

  app.all('/bot:token/setMyCommands', (req, res) => {
    const list = param(req.body, 'commands');
    const valid = Array.isArray(list) && list.length <= 100 && list.every((c) => c
      && /^[a-z0-9_]{1,32}$/.test(c.command) && typeof c.description === 'string'
      && c.description.length >= 1 && c.description.length <= 256);
    if (!valid) { fail(res, 400, 'Bad Request: BOT_COMMAND_INVALID'); return; }
    const scope = scopeOf(req.body);
    if (!scope) { fail(res, 400, 'Bad Request: wrong scope'); return; }
    commands[req.params.token] = commands[req.params.token] || {};
    commands[req.params.token][scope] = list.map((c) => ({ command: c.command, description: c.description }));
    res.json({ ok: true, result: true });
  });

  // Bot API, "BotCommandScope": each scope keeps its own list (those without a chat_id here).
  function scopeOf(body) {
    const scope = param(body, 'scope');
    const type = scope && scope.type ? scope.type : 'default';
    const known = ['default', 'all_private_chats', 'all_group_chats', 'all_chat_administrators'];
    return known.includes(type) ? type : null;
  }

  app.all('/bot:token/getMyCommands', (req, res) => res.json({ ok: true,
    result: (commands[req.params.token] || {})[scopeOf(req.body) || 'default'] || [] }));

  app.all('/bot:token/deleteMyCommands', (req, res) => {
    if (commands[req.params.token]) delete commands[req.params.token][scopeOf(req.body) || 'default'];
    res.json({ ok: true, result: true });
  });

  // Members and admins: see the header for the rules each route models.
  function memberOf(token, chatId, userId) {
    const chat = (members[token] || {})[String(chatId)] || {};
    return chat[String(userId)] || { status: 'left', user: { id: Number(userId), is_bot: false, first_name: 'Alonso' } };
  }

  function chatMember(m) { // the ChatMember object of the Bot API for a status
    const out = { status: m.status, user: m.user };
    if (m.status === 'creator') Object.assign(out, { is_anonymous: false });
    if (m.status === 'administrator') {
      Object.assign(out, { can_be_edited: false, is_anonymous: false, can_manage_chat: true,
        can_delete_messages: true, can_manage_video_chats: true, can_restrict_members: true,
        can_promote_members: false, can_change_info: true, can_invite_users: true, can_post_stories: false,
        can_edit_stories: false, can_delete_stories: false, can_pin_messages: true });
    }
    if (m.status === 'kicked') out.until_date = 0;
    return out;
  }

  app.all('/bot:token/getChatAdministrators', (req, res) => {
    const chatId = req.body.chat_id;
    if (!chatId) { fail(res, 400, 'Bad Request: chat not found'); return; }
    if (Number(chatId) > 0) { fail(res, 400, 'Bad Request: there are no administrators in the private chat'); return; }
    const chat = (members[req.params.token] || {})[String(chatId)] || {};
    res.json({ ok: true, result: Object.values(chat).filter((m) => ADMIN.has(m.status) && !m.user.is_bot).map(chatMember) });
  });

  app.all('/bot:token/getChatMember', (req, res) => {
    if (!req.body.chat_id || !req.body.user_id) { fail(res, 400, 'Bad Request: chat not found'); return; }
    res.json({ ok: true, result: chatMember(memberOf(req.params.token, req.body.chat_id, req.body.user_id)) });
  });

  app.post('/setMember', async (req, res) => {
    const { token } = req.body;
    const chatId = String(req.body.chat_id);
    const userId = Number(req.body.user_id);
    const isBot = userId === BOT.id;
    const user = isBot ? BOT : { id: userId, is_bot: req.body.is_bot === true, first_name: req.body.first_name || 'Alonso' };
    const old = memberOf(token, chatId, userId);
    setStatus(token, chatId, user, req.body.status);
    const chat = { id: Number(chatId), type: req.body.chat_type || 'supergroup', title: 'Tertulia' };
    knownChats[chatId] = knownChats[chatId] || chat;
    const botIsAdmin = ADMIN.has(memberOf(token, chatId, BOT.id).status);
    if (isBot || botIsAdmin) {
      const changed = { chat: knownChats[chatId], from: { id: 777, is_bot: false, first_name: 'Dueño' },
        date: seconds(Date.now()), old_chat_member: chatMember(old), new_chat_member: chatMember(memberOf(token, chatId, userId)) };
      await addRaw(token, { [isBot ? 'my_chat_member' : 'chat_member']: changed });
    }
    res.json({ ok: true, result: true });
  });

  app.all('/bot:token/setWebhook', (req, res) => {
    const { token } = req.params;
    const allowed = param(req.body, 'allowed_updates');
    if (Array.isArray(allowed)) allowedUpdates[token] = allowed;
    if (req.body.url) server.setWebhook({ url: req.body.url, secret_token: req.body.secret_token }, token);
    else server.deleteWebhook(token);
    res.json({ ok: true, result: true, description: req.body.url ? 'Webhook was set' : 'Webhook was deleted' });
  });

  app.all('/bot:token/getWebhookInfo', (req, res) => {
    const { token } = req.params;
    const hook = server.webhooks[token];
    const pending = server.storage.userMessages.filter((u) => u.botToken === token).length;
    res.json({ ok: true, result: { url: hook ? hook.url : '', has_custom_certificate: false, pending_update_count: pending } });
  });

  app.post('/calls', (req, res) => res.json({ ok: true, result: calls.filter((c) => c.token === req.body.token) }));

  app.post('/flood', (req, res) => {
    const { token } = req.body;
    const on = req.body.on === true || req.body.on === 'true';
    flood[token] = flood[token] || {
      on, bot: { sent: [], ban: 0 }, chats: {},
      stats: { requests: 0, refused: {}, sent_into_pending: 0, longest_ban_s: 0 },
    };
    flood[token].on = on;
    res.json({ ok: true, result: true });
  });

  app.post('/floodStorm', (req, res) => {
    const f = flood[req.body.token];
    if (!f) { fail(res, 400, 'flood mode is off for this token'); return; }
    const key = String(req.body.chat_id);
    const chat = f.chats[key] || (f.chats[key] = { tokens: CHAT_BURST, at: Date.now(), ban: 0, sent: [] });
    chat.storm = { seconds: Number(req.body.seconds), times: Number(req.body.times || 1) };
    res.json({ ok: true, result: true });
  });

  // The Bot API's getUpdates: "An update is considered confirmed as soon as getUpdates is called
  // with an offset higher than its update_id"; until then Telegram keeps it and sends it again.
  app.post('/unconfirmed', (req, res) => res.json({ ok: true, result: server.storage.userMessages
    .filter((u) => u.botToken === req.body.token).map((u) => u.updateId) }));

  app.post('/hold', (req, res) => {
    const { token } = req.body;
    const on = req.body.on === true || req.body.on === 'true';
    const waiting = held[token] || [];
    if (on) held[token] = waiting;
    else { delete held[token]; for (const release of waiting) release(); }
    res.json({ ok: true, result: true });
  });

  app.post('/floodStats', (req, res) => {
    const f = flood[req.body.token];
    res.json({ ok: true, result: f ? f.stats : null });
  });

  app.post('/failNext', (req, res) => {
    const { token, method } = req.body;
    const parameters = {};
    if (req.body.retry_after) parameters.retry_after = Number(req.body.retry_after);
    if (req.body.migrate_to_chat_id) parameters.migrate_to_chat_id = Number(req.body.migrate_to_chat_id);
    failures.push({
      token, method, error_code: Number(req.body.error_code || 500),
      description: req.body.description || 'Internal Server Error',
      parameters: Object.keys(parameters).length ? parameters : undefined,
      times: Number(req.body.times || 1),
    });
    res.json({ ok: true, result: true });
  });
}

routes.unshift(patchedRoutes);

const server = new TelegramServer({ host, port, storeTimeout: 3600 });

// Webhook delivery as the Bot API does it: with the secret token header, and a failed delivery
// keeps the update pending instead of crashing the process (the package lets it reject unhandled).
function setStatus(token, chatId, user, status) {
  members[token] = members[token] || {};
  members[token][String(chatId)] = members[token][String(chatId)] || {};
  members[token][String(chatId)][String(user.id)] = { status, user };
}

server.addUserUpdate = async function addUserUpdate(update) {
  if (update.message && update.message.chat) knownChats[String(update.message.chat.id)] = update.message.chat;
  const from = update.message && update.message.from;
  if (from && update.message.chat.type !== 'private') { // who writes in a group is a member of it
    const chat = (members[update.botToken] || {})[String(update.message.chat.id)] || {};
    if (!chat[String(from.id)]) setStatus(update.botToken, update.message.chat.id, from, 'member');
  }
  if (!wanted(update.botToken, update)) { this.updateId++; return; } // never delivered
  const hook = this.webhooks[update.botToken];
  this.updateId++;
  if (hook) {
    const headers = hook.secret_token ? { 'X-Telegram-Bot-Api-Secret-Token': hook.secret_token } : {};
    try {
      const formatted = formatUpdate(update);
      const answer = await fetch(hook.url, {
        method: 'POST', body: JSON.stringify(formatted),
        headers: { 'Content-Type': 'application/json', ...headers }, signal: AbortSignal.timeout(10000),
      });
      if (answer.ok) return;
      console.error(`webhook delivery failed: HTTP ${answer.status}`);
    } catch (error) {
      console.error(`webhook delivery failed: ${error.message}`);
    }
  }
  this.storage.userMessages.push(update);
};

server.start().then(() => {
  console.log(`listening on http://${host}:${port}`);
}, (error) => {
  console.error(`cannot start: ${error.message}`);
  process.exit(1);
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
