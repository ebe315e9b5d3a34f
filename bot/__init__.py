"""The bot: the chat logic written once (chat/), a room per platform (telegram/, discord/, console/),
and the life of the process that runs them (process/).

Imports go one way: chat/ never imports a platform, and no platform imports another (a test holds
this). process/ starts the platforms and hands them the chat logic.
"""
