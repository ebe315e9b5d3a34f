"""The Discord adapter: slash commands (/cervantes) and prefix commands (!cervantes) over Commands.

Both paths end in `Commands.run`; they differ only in how they read the command and where the reply
goes: a slash command defers and then edits its response (with followups past 2000 characters), a
prefix command answers with messages of its own. A generated reply's last message gets the buttons
of bot.chat.buttons with its final text (bot.discord.buttons); a press answers with messages that reply to
the pressed one. Every send and edit allows no mentions, so a seed with @everyone or <@id> pings
nobody. Settings are per channel: ChatKey("discord", channel id).

In a server, changing settings is for those who manage it (bot.chat.members): the settings' slash
commands carry default_permissions Manage Server (server owners can change that under Integrations),
and every settings command, slash or prefix, checks Manage Server, or Manage Channels in that
channel, when it runs. A member is limited across every channel and thread of the server.

The application can be installed by users as well as by servers (allowed_installs, allowed_contexts):
/cervantes, /continuar and the buttons then work in any DM, group DM or server where the user is,
answered through the interaction, even where the bot is not a member; settings there need the bot
added to the server. Every such place shares one member limit per person.

Every command and press the bot could answer with a message of its own (in a server with the bot, or
its DM) is stored in the inbox (bot.chat.inbox) on receipt, before the defer, and marked done once
answered. Those a crash left run again in setup_hook, before the gateway brings new ones (at start,
and when a standby takes over), each answered with ordinary channel messages (ChannelOutput): an
interaction's token is a secret and is never stored. Who sent it is kept with whether they could
change the settings then (the permissions came with it), as the check at its run goes by that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

import aiohttp
import discord
from discord import app_commands

from bot.chat import buttons, messages
from bot.discord import buttons as discord_buttons
from bot.chat.commands import ChatKey, Commands, Written, record
from bot.chat.inbox import Entry, Inbox
from bot.chat.members import Member
from bot.chat.parsing import COMMANDS, Command, format_number, parse
from bot.chat.replies import EditPacer
from bot.chat.replies import split as split_chars
from config import DiscordSection

log = logging.getLogger(__name__)

MAX_CHARS = 2000  # Discord's limit for one message's content
STOP_GRACE_S = 5.0  # at a stop, running commands get this long to finish their replies (serve allows 7 s)
CLOSE_S = 1.5  # and closing the gateway and the HTTP session this long
TOKEN_LIFETIME_S = 14 * 60  # an interaction's token works for 15 minutes; past that, channel messages
NO_MENTIONS = discord.AllowedMentions.none()
# Discord said no, or could not be reached (429s are waited out by discord.py itself)
DISCORD_ERRORS = (discord.DiscordException, aiohttp.ClientError, asyncio.TimeoutError, OSError)
SETTINGS = ("temperatura", "longitud", "olvidar", "ajustes")  # slash commands shown to server managers
USER_INSTALLED = ("discord", "user-installed")  # the member group of every place without the bot


def split(text: str, limit: int = MAX_CHARS) -> list[str]:
    """A reply cut into Discord messages of at most `limit` characters."""
    return split_chars(text, limit)


class _Reply:
    """A reply in one or more messages, edited in place as it grows: what both Outputs share.

    A message that could not be posted is never posted again (it may exist after all: no duplicate
    replies); a failed edit is retried with the next one, and the final edit shows the full text.
    """

    def __init__(self, pace: EditPacer, channel_id: int):
        self.pace, self.channel_id = pace, channel_id
        self._messages: list = []  # one handle per posted message
        self._shown: list[str] = []  # what each of them says now
        self._gave_up = False

    async def send(self, text: str) -> None:
        await self._show(text)

    async def stream(self, pieces: Written) -> None:
        text = ""
        async for piece in pieces:  # read to the end even when Discord fails: the state gets saved
            text += piece
            if self.pace.take_if_free(self.channel_id):
                await self._show(text)
        await self._show(text or "…", discord_buttons.view(pieces.reply_id))  # the full text, at once

    async def _show(self, text: str, view: discord.ui.View | None = None) -> None:
        """Post or edit each message of `text`; `view`, the buttons, goes on the last one."""
        parts = split(text)
        for i, part in enumerate(parts):
            if self._gave_up or not part.strip():  # Discord refuses blank messages: wait for more
                return
            extra = {"view": view} if view is not None and i == len(parts) - 1 else {}
            if i < len(self._messages):
                if part != self._shown[i] or extra:
                    try:
                        await self._edit(self._messages[i], part, **extra)
                        self._shown[i] = part
                    except DISCORD_ERRORS as exc:
                        log.warning("Discord edit failed: %r", exc)
                continue
            try:
                self._messages.append(await self._post(part, **extra))
                self._shown.append(part)
            except DISCORD_ERRORS as exc:
                log.warning("Discord send failed, this reply stops here: %r", exc)
                self._gave_up = True

    async def _post(self, text: str, **extra):
        """Post a message; `extra`: the view, when it carries the buttons."""
        raise NotImplementedError

    async def _edit(self, message, text: str, **extra) -> None:
        raise NotImplementedError


class InteractionOutput(_Reply):
    """The reply to a deferred slash command: its response message, then followups. The
    interaction's token expires after 15 minutes: a reply still being written then (a long queue)
    goes on in ordinary messages in the channel."""

    def __init__(self, interaction: discord.Interaction, pace: EditPacer):
        super().__init__(pace, interaction.channel_id)
        self.interaction = interaction
        self._messages, self._shown = [None], [""]  # None: the deferred response, always there
        self._started = time.monotonic()

    def _expired(self) -> bool:
        return time.monotonic() - self._started >= TOKEN_LIFETIME_S

    async def _post(self, text: str, **extra) -> discord.abc.Snowflake:
        if self._expired():
            return await self.interaction.channel.send(text, allowed_mentions=NO_MENTIONS, **extra)
        return await self.interaction.followup.send(text, allowed_mentions=NO_MENTIONS, wait=True, **extra)

    async def _edit(self, message: discord.WebhookMessage | discord.Message | None, text: str, **extra) -> None:
        if self._expired() and not isinstance(message, discord.Message):  # the token's messages are out of reach
            i = self._messages.index(message)
            self._messages[i] = await self.interaction.channel.send(text, allowed_mentions=NO_MENTIONS, **extra)
        elif message is None:
            await self.interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS, **extra)
        else:
            await message.edit(content=text, allowed_mentions=NO_MENTIONS, **extra)


class MessageOutput(_Reply):
    """The reply to a prefix command, or to a button's press: messages in the channel of `message`
    (the command, or the message pressed), the first one answering it."""

    def __init__(self, message: discord.Message, pace: EditPacer):
        super().__init__(pace, message.channel.id)
        self.message = message

    async def _post(self, text: str, **extra) -> discord.Message:
        reference = None if self._messages else self.message.to_reference(fail_if_not_exists=False)
        return await self.message.channel.send(text, reference=reference, allowed_mentions=NO_MENTIONS, **extra)

    async def _edit(self, message: discord.Message, text: str, **extra) -> None:
        await message.edit(content=text, allowed_mentions=NO_MENTIONS, **extra)


class ChannelOutput(_Reply):
    """The reply to a command run again after a restart (bot.chat.inbox): ordinary messages in its
    channel, the first answering the message it came with, if any."""

    def __init__(self, channel: discord.PartialMessageable, pace: EditPacer, reply_to: int | None):
        super().__init__(pace, channel.id)
        self.channel, self.reply_to = channel, reply_to

    async def _post(self, text: str, **extra) -> discord.Message:
        reference = None
        if not self._messages and self.reply_to is not None:
            reference = self.channel.get_partial_message(self.reply_to).to_reference(fail_if_not_exists=False)
        return await self.channel.send(text, reference=reference, allowed_mentions=NO_MENTIONS, **extra)

    async def _edit(self, message: discord.Message, text: str, **extra) -> None:
        await message.edit(content=text, allowed_mentions=NO_MENTIONS, **extra)


class DiscordClient(discord.AutoShardedClient):
    """discord.py's client with its command tree, as in discord.py's app_commands examples. Sharded:
    `[discord] shard_count` (0: Discord's recommendation) and `shard_ids` (this process's; all when
    empty). DMs arrive on shard 0."""

    def __init__(self, adapter: DiscordAdapter, intents: discord.Intents):
        config = adapter.config
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS, shard_count=config.shard_count or None,
                         shard_ids=list(config.shard_ids) or None)
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:  # runs inside login(), before the gateway connects
        self.add_dynamic_items(discord_buttons.ReplyButton)  # presses on any message, older ones too
        await self.adapter.sync_commands()
        await self.adapter.replay()  # before the gateway brings any new command

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)


class DiscordAdapter:
    """`await start()` to log in and connect, `await stop()` to close; `client` is the discord.Client."""

    def __init__(self, commands: Commands, config: DiscordSection, token: str, inbox: Inbox | None = None):
        self.commands = commands
        self.inbox = inbox or Inbox(commands, None, max_age_s=0)  # commands stored on receipt
        self.config = config
        self._token = token
        intents = discord.Intents.default()
        intents.message_content = config.message_content  # privileged: prefix commands need it
        self.client = DiscordClient(self, intents)
        for command in _slash_commands(self, commands):
            self.client.tree.add_command(command)
        self.pace = EditPacer(config.edit_interval_s)
        self.double_taps = buttons.DoubleTaps()
        self._connection: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()  # commands being answered
        self._closing = False

    async def start(self) -> None:
        """Log in (syncing the slash commands), connect in the background; return once ready.

        Raises what stopped it first: discord.LoginFailure for a bad token,
        discord.PrivilegedIntentsRequired when message_content is on but not enabled for the bot.
        """
        try:
            await self.client.login(self._token)
            self._connection = asyncio.create_task(self.client.connect(), name="discord-gateway")
            ready = asyncio.create_task(self.client.wait_until_ready())
            try:
                await asyncio.wait({self._connection, ready}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
            if self._connection.done():
                self._connection.result()  # raises why the connection ended
                raise RuntimeError("the Discord connection closed before it was ready")
        except BaseException:
            await self.stop(grace_s=0)
            raise
        self._connection.add_done_callback(self._connection_ended)
        log.info("connected to Discord as %s", self.client.user)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Take no new commands, give running ones `grace_s` to finish their replies, then close:
        within grace_s + CLOSE_S. A command still running then is cut, and counted as `stopping`."""
        self._closing = True
        running = self._running - {asyncio.current_task()}
        if running and grace_s > 0:
            await asyncio.wait(running, timeout=grace_s)
        for task in running:
            task.cancel()  # a no-op for the ones that finished
        if running:
            await asyncio.wait(running, timeout=CLOSE_S / 3)
        closing = asyncio.ensure_future(self._close())
        await asyncio.wait({closing}, timeout=CLOSE_S)
        if not closing.done():
            closing.cancel()
            log.warning("the Discord connection did not close within %.1f s: going on without it", CLOSE_S)
        elif not closing.cancelled() and closing.exception() is not None:
            log.warning("closing the Discord connection failed: %r", closing.exception())

    async def _close(self) -> None:
        if self.client.user is None:
            # not logged in (never tried, or a bad token): no gateway, only the HTTP session to close
            # (discord.py's AutoShardedClient.close also posts to an event queue that login makes,
            # and raises AttributeError where login never began)
            await self.client.http.close()
            return
        await self.client.close()
        if self._connection is not None:
            await asyncio.gather(self._connection, return_exceptions=True)

    async def halt(self) -> None:
        """Stop at once (this process lost its leadership: bot/process/leader.py): replies being
        written are not finished, the gateway and the HTTP session close."""
        await self.stop(grace_s=0)

    @property
    def shards(self) -> dict[int, bool]:
        """Each shard this process runs: connected (ready, its gateway socket open) or not."""
        ready = self.client.is_ready()
        return {i: ready and not shard.is_closed() for i, shard in sorted(self.client.shards.items())}

    @property
    def connected(self) -> bool:
        shards = self.shards
        return bool(shards) and all(shards.values()) and not self.client.is_closed()

    def _connection_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the Discord connection ended: %r", task.exception())

    async def sync_commands(self) -> None:
        """Register the slash commands with Discord: in `guilds` only when given, else globally."""
        if not self.config.sync_commands:
            return
        for guild in [discord.Object(g) for g in self.config.guilds] or [None]:
            where = f"to guild {guild.id}" if guild else "globally"
            if guild is not None:
                self.client.tree.copy_global_to(guild=guild)
            try:
                synced = await self.client.tree.sync(guild=guild)
                log.info("synced %d slash commands %s", len(synced), where)
            except DISCORD_ERRORS as exc:  # the bot still answers prefix commands
                log.error("slash commands not synced %s: %r", where, exc)

    # --- handlers ---------------------------------------------------------------------------------

    async def on_slash(self, interaction: discord.Interaction, name: str, argument: str | None) -> None:
        if self._closing:
            return
        member = self._member_of(interaction)
        entry = await self._receive(interaction.channel_id, Command(name, (argument or "").strip()), member,
                                    store=self._reachable(interaction), guild_id=interaction.guild_id)
        try:
            await interaction.response.defer(thinking=True)
        except DISCORD_ERRORS as exc:  # too late (3 s) or Discord unreachable: no way to answer
            log.warning("could not defer /%s: %r", name, exc)
            self.inbox.refused(entry)
            return
        await self._run(entry, InteractionOutput(interaction, self.pace), member)

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self._closing:  # other bots, webhooks and this bot itself
            return
        command = self.prefix_command(message.content)
        if command is not None:
            member = None
            if message.guild is not None and isinstance(message.author, discord.Member):
                member = _member(message.author.id, message.guild.id,
                                 lambda: message.channel.permissions_for(message.author))
            answered = self._answered(message) if command.name in buttons.LABELS else None
            if answered is not None and not command.argument:  # !continuar as a reply to one of our texts
                command = Command(command.name, answered)
            entry = await self._receive(message.channel.id, command, member, reply_to=message.id,
                                        guild_id=message.guild.id if message.guild else None)
            await self._run(entry, MessageOutput(message, self.pace), member)

    def _answered(self, message: discord.Message) -> str | None:
        """The reply id named by the buttons of the message of ours that `message` answers, if any."""
        replied = message.reference.resolved if message.reference else None
        if not isinstance(replied, discord.Message) or replied.author != self.client.user:
            return None
        for row in replied.components:
            for item in getattr(row, "children", [row]):
                if (command := buttons.command(getattr(item, "custom_id", None))) is not None:
                    return command.argument
        return None

    async def on_press(self, interaction: discord.Interaction, data: str) -> None:
        """A press on a reply's button: its command, answered in messages that reply to the pressed one."""
        command = buttons.command(data)
        if self._closing or command is None or interaction.message is None:
            return
        if not self.double_taps.first(data, interaction.message.id):
            try:  # a double tap: said to the presser alone
                await interaction.response.send_message(messages.PRESSED_TWICE, ephemeral=True)
            except DISCORD_ERRORS as exc:
                log.warning("could not answer a double tap: %r", exc)
            return
        reachable = self._reachable(interaction)
        member = self._member_of(interaction)
        entry = await self._receive(interaction.channel_id, command, member, store=reachable,
                                    reply_to=interaction.message.id, guild_id=interaction.guild_id)
        try:  # within 3 s; where the bot cannot post, the interaction answers: "thinking", then the text
            await interaction.response.defer(thinking=not reachable)
        except DISCORD_ERRORS as exc:
            log.warning("could not defer a press on %s: %r", data, exc)
            self.inbox.refused(entry)
            return
        # an interaction's own messages cannot reply: where it can, the bot answers the pressed one
        out = MessageOutput(interaction.message, self.pace) if reachable else InteractionOutput(interaction, self.pace)
        await self._run(entry, out, member)

    def _reachable(self, interaction: discord.Interaction) -> bool:
        """Whether the bot can post in the interaction's channel itself: a server it is in, or its DM."""
        return self._present(interaction) or bool(interaction.context.dm_channel)

    def _present(self, interaction: discord.Interaction) -> bool:
        """Whether the bot is a member of the server the interaction comes from."""
        guild_id = interaction.guild_id
        return guild_id is not None and (self.client.get_guild(guild_id) is not None
                                         or interaction.is_guild_integration())

    def _member_of(self, interaction: discord.Interaction) -> Member | None:
        """Who used a slash command or a button: None in the bot's DM; in a server with the bot,
        its member; anywhere else (a user install), one member limit per person across all such places."""
        user = interaction.user.id
        if self._present(interaction):
            return _member(user, interaction.guild_id, lambda: interaction.permissions)
        if interaction.guild_id is not None:  # a server without the bot: its settings are not ours to change
            return Member(str(user), USER_INSTALLED, _nobody, installed=False)
        if interaction.context.private_channel:  # a group DM, or a DM between users: no admins there
            return Member(str(user), USER_INSTALLED, _everybody)
        return None

    def prefix_command(self, text: str) -> Command | None:
        """"!cervantes Sancho dijo" -> Command("cervantes", "Sancho dijo"); None for anything else,
        unknown commands included (other bots may share the prefix)."""
        text, prefix = text.strip(), self.config.prefix
        if not prefix or not text.startswith(prefix):
            return None
        command = parse("/" + text[len(prefix):])
        return command if command is not None and command.name in COMMANDS else None

    async def _receive(self, channel_id: int, command: Command, member: Member | None, *, store: bool = True,
                       reply_to: int | None = None, guild_id: int | None = None) -> Entry:
        """The command, stored in the inbox before it runs when `store` (the bot can answer it with a
        message of its own after a restart). `reply_to`: the message to answer; `guild_id`: its
        server (for the member, and the shard it arrives on)."""
        entry = Entry(ChatKey("discord", str(channel_id)), command.name, command.argument,
                      None if member is None else member.user, time.time(),
                      {"channel_id": channel_id, "reply_to": reply_to, "guild_id": guild_id})
        if not store:
            return entry
        if member is not None:  # whether they may change the settings, as the platform said with it
            entry.answer["admin"] = await _admin_now(member)
        (stored,) = await self.inbox.receive([entry])
        return stored or entry

    async def _run(self, entry: Entry, out: _Reply, member: Member | None) -> None:
        """`member`: who wrote, in a server's channel or thread (None in a DM with the bot)."""
        task = asyncio.current_task()
        self._running.add(task)
        chat = entry.chat
        try:
            await self.inbox.run(entry, out, member)
        except asyncio.CancelledError:
            if self._closing:  # cut by a stop: counted
                record({"platform": "discord", "chat": chat.tag, "command": entry.command, "outcome": "stopping"})
            raise
        finally:
            self._running.discard(task)

    async def replay(self) -> None:
        """The commands a crash left unanswered (of this process's shards), run again, answered in
        their channels."""
        await self.inbox.replay("discord", self._run_again, mine=self._mine)

    async def _run_again(self, entry: Entry) -> None:
        answer = entry.answer
        out = ChannelOutput(self.client.get_partial_messageable(answer["channel_id"]), self.pace,
                            answer.get("reply_to"))
        member = None
        if entry.member is not None:
            admin = bool(answer.get("admin"))

            async def is_admin() -> bool:
                return admin

            member = Member(entry.member, ("discord", answer.get("guild_id")), is_admin)
        await self._run(entry, out, member)

    def _mine(self, entry: Entry) -> bool:
        """Whether the command came on one of this process's shards (all of them, unless
        `[discord] shard_ids` names some): a server's on shard (id >> 22) % count, DMs on shard 0."""
        ids = self.config.shard_ids
        if not ids:
            return True
        guild = entry.answer.get("guild_id")
        return (0 if guild is None else (guild >> 22) % self.config.shard_count) in ids


def _member(user_id: int, guild_id: int, permissions) -> Member:
    """A member of a server with the bot; `permissions()`: theirs in the channel, overwrites included."""
    async def is_admin() -> bool:
        granted = permissions()
        return granted.administrator or granted.manage_guild or granted.manage_channels

    return Member(str(user_id), ("discord", guild_id), is_admin)


async def _admin_now(member: Member) -> bool:
    """A Discord member's is_admin reads the permissions that came with the command: no request."""
    return await member.is_admin()


async def _nobody() -> bool:
    return False


async def _everybody() -> bool:
    return True


def _slash_commands(adapter: DiscordAdapter, commands: Commands) -> list[app_commands.Command]:
    """The seven slash commands; each description is the docstring of its method in Commands."""
    c = commands.chat
    tmin, tmax = format_number(c.min_temperature), format_number(c.max_temperature)

    @app_commands.command(description=Commands.cervantes.__doc__)
    @app_commands.describe(semilla="Cómo empieza el texto, y yo lo continúo. Ejemplo: Sancho dijo")
    async def cervantes(interaction: discord.Interaction, semilla: str | None = None) -> None:
        await adapter.on_slash(interaction, "cervantes", semilla)

    @app_commands.command(description=Commands.continuar.__doc__)
    async def continuar(interaction: discord.Interaction) -> None:
        await adapter.on_slash(interaction, "continuar", "")

    @app_commands.command(description=Commands.temperatura.__doc__)
    @app_commands.describe(valor=f"De {tmin} a {tmax}, como 0,7; sin valor, te digo la de ahora")
    async def temperatura(interaction: discord.Interaction, valor: str | None = None) -> None:
        await adapter.on_slash(interaction, "temperatura", valor)

    @app_commands.command(description=Commands.longitud.__doc__)
    @app_commands.describe(n=f"De {c.min_length} a {c.max_length}, como 300; sin n, te digo la de ahora")
    async def longitud(interaction: discord.Interaction, n: str | None = None) -> None:
        await adapter.on_slash(interaction, "longitud", n)

    @app_commands.command(description=Commands.olvidar.__doc__)
    async def olvidar(interaction: discord.Interaction) -> None:
        await adapter.on_slash(interaction, "olvidar", "")

    @app_commands.command(description=Commands.ajustes.__doc__)
    @app_commands.describe(quien="todos: cualquiera cambia los ajustes; admins: solo quienes gestionan el servidor")
    async def ajustes(interaction: discord.Interaction, quien: Literal["todos", "admins"] | None = None) -> None:
        await adapter.on_slash(interaction, "ajustes", quien)

    @app_commands.command(description=Commands.ayuda.__doc__)
    async def ayuda(interaction: discord.Interaction) -> None:
        await adapter.on_slash(interaction, "ayuda", "")

    every = [cervantes, continuar, temperatura, longitud, olvidar, ajustes, ayuda]
    for command in every:  # installable by servers and by users; usable in servers, the bot's DM, group DMs
        command.allowed_installs = app_commands.AppInstallationType(guild=True, user=True)
        command.allowed_contexts = app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True)
        if command.name in SETTINGS:  # shown to those who manage the server; owners can change it
            command.default_permissions = discord.Permissions(manage_guild=True)
    return every
