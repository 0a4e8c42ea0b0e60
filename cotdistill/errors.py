"""User-facing errors: one line naming the file/row/field and the fix. The CLI prints them bare."""


class CotdistillError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))  # force a single line
