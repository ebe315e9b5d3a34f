"""Every text the bot says, in Spanish, in one place."""

HELP = """\
Soy Cervantes: continúo lo que empieces con la prosa de Don Quijote, letra a letra, con una red \
neuronal (GRU) entrenada en la novela.

/cervantes <semilla> — continúo tu frase. Ejemplo: /cervantes Sancho dijo
/continuar — sigo escribiendo justo donde lo dejé; en respuesta a uno de mis textos, sigo ese
/temperatura <valor> — cuán atrevida es la escritura, de {tmin} a {tmax}. Ejemplo: /temperatura 0,7
/longitud <n> — cuántos caracteres escribo, de {lmin} a {lmax}. Ejemplo: /longitud 500
/olvidar — borro todo lo que guardo de este chat
/ajustes todos — en un grupo, cualquiera podrá cambiar los ajustes; /ajustes admins lo deshace
/ayuda — este mensaje

Bajo cada texto, «Continuar» lo sigue y «Otra» lo escribe de nuevo. En los grupos y servidores, cambiar la temperatura o la longitud, /olvidar y /ajustes son cosa de los administradores; ver los ajustes, escribir y los botones, de todos."""

DROPPED = "(He omitido caracteres que no conozco: {chars})"
TRUNCATED = "(Tu semilla era larga: he leído solo sus últimos {n} caracteres.)"
NOTHING_TO_CONTINUE = "Aún no hay nada que continuar. Empieza con /cervantes <semilla>, por ejemplo: /cervantes Sancho dijo"
MODEL_CHANGED = "(El modelo ha cambiado desde la última vez: retomo a partir del final del texto.)"

TEMPERATURE_IS = "La temperatura de este chat es {value}. Cámbiala con /temperatura <valor>, de {tmin} a {tmax}."
TEMPERATURE_SET = "Temperatura fijada en {value}."
TEMPERATURE_BAD = "La temperatura debe ser un número entre {tmin} y {tmax}, por ejemplo: /temperatura 0,5"
LENGTH_IS = "Escribo {value} caracteres en este chat. Cámbialo con /longitud <n>, de {lmin} a {lmax}."
LENGTH_SET = "Longitud fijada en {value} caracteres."
LENGTH_BAD = "La longitud debe ser un número entero entre {lmin} y {lmax}, por ejemplo: /longitud 300"
FORGOTTEN = "He olvidado todo lo que guardaba de este chat."
NOTHING_TO_FORGET = "No guardaba nada de este chat."

# who may change a group's settings (bot.chat.members)
ONLY_ADMINS = "Solo los administradores de este chat pueden hacer eso."
ADMINS_UNKNOWN = "No puedo saber ahora quién administra este chat. Inténtalo de nuevo en un momento."
NOT_INSTALLED = ("Aquí no estoy instalado: para cambiar los ajustes de este servidor, sus administradores "
                 "tienen que añadirme a él.")
ADMINS_CHANGE = ("En este chat cambian los ajustes y usan /olvidar sus administradores. Un administrador "
                 "puede dejárselo a todos con /ajustes todos.")
EVERYONE_CHANGES = ("En este chat cualquiera puede cambiar los ajustes y usar /olvidar. Un administrador "
                    "puede devolvérselo a los administradores con /ajustes admins.")
AJUSTES_BAD = ("Escribe /ajustes todos para que cualquiera pueda cambiar los ajustes de este chat, o "
               "/ajustes admins para que solo puedan sus administradores.")
AJUSTES_PRIVATE = "En un chat privado los ajustes son solo tuyos: /ajustes es para los grupos."

UNKNOWN_COMMAND = "No conozco ese comando. Escribe /ayuda para ver los que entiendo."
RATE_LIMITED = "Despacio, que la pluma se cansa: espera {seconds} s antes de pedirme más."
BUSY = "Estoy escribiendo para muchos a la vez. Inténtalo de nuevo en un momento."
TIMEOUT = "Se me ha ido el santo al cielo y no he terminado a tiempo. Inténtalo de nuevo."
FAILED = "Algo ha fallado mientras escribía; lo siento. Inténtalo de nuevo en un momento."
NOT_SAVED = "(No he podido guardar el estado de este chat ahora mismo: /continuar quizá no funcione.)"
SETTINGS_NOT_READ = "(No he podido leer los ajustes de este chat: escribo con los de siempre.)"
PRESSED_TWICE = "Ya estoy en ello."  # a button pressed again at once (shown on the button, not in the chat)
REPLY_FORGOTTEN = ("Ya no recuerdo ese texto: guardo solo los últimos de cada chat. Empieza otro con "
                   "/cervantes <semilla>, por ejemplo: /cervantes Sancho dijo")
CONTINUE_WHICH = ("Para seguir un texto anterior, responde a él con /continuar o pulsa su botón «Continuar». "
                  "Sin más, /continuar sigue el último.")
CONTINUATION_NOT_READ = "No puedo leer ahora dónde lo dejé. Empieza de nuevo con /cervantes <semilla>, o inténtalo más tarde."
SETTING_NOT_SAVED = "No he podido guardar el cambio ahora mismo. Inténtalo de nuevo más tarde."

# Telegram inline mode (bot/telegram/inline.py): the button shown instead of the three texts
INLINE_BUSY = "Estoy ocupado: prueba en un momento"
INLINE_SLOW = "Despacio, que la pluma se cansa"
INLINE_FAILED = "Algo ha fallado: prueba de nuevo"
