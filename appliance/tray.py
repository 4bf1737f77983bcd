"""The tray icon: the queue at a glance (idle, N running, paused, last job failed) and a menu to open the dashboard
or the inbox folder, pause or resume the queue, and quit.

pystray chooses its backend when imported and raises (not ImportError) without a display, so it is imported only
when the icon is shown. The menu's actions are plain methods, usable without any display."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
import webbrowser
from collections.abc import Callable
from typing import Any

from appliance.core import Appliance

log = logging.getLogger(__name__)

NAME = "caesar-appliance"
COLOURS = {"idle": (70, 110, 160), "running": (30, 150, 70), "paused": (215, 150, 20), "failed": (200, 40, 40)}
FAILED_STATES = ("FAILURE", "TIMED-OUT", "ABORTED")
REFRESH_SECONDS = 0.5
DOCK_RETRY_SECONDS = 2.0
MAX_DOCK_RETRY_SECONDS = 60.0


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def icon_image(state: str, size: int = 64) -> Any:
    """A disc in the state's colour with a white ring: readable at 16 px, distinct without relying on the text."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    margin = size // 16
    draw.ellipse((margin, margin, size - margin, size - margin), fill=COLOURS[state] + (255,))
    inner = size // 4
    draw.ellipse((inner, inner, size - inner, size - inner), outline=(255, 255, 255, 255), width=max(2, size // 12))
    return image


class Tray:
    def __init__(
        self,
        appliance: Appliance,
        dashboard_link: Callable[[], str],
        quit: Callable[[], None],
        open_url: Callable[[str], object] = webbrowser.open,
    ) -> None:
        self.appliance = appliance
        self.dashboard_link = dashboard_link
        self._quit = quit
        self._open_url = open_url
        self._icon: Any = None
        self._stopped = threading.Event()
        self._x: Any = None  # our own X connection, to see whether the icon is docked
        self._told_undocked = False

    # -- what the icon shows -----------------------------------------------------------------------------------

    def status(self) -> tuple[str, str]:
        """The icon's state and its tooltip."""
        jobs, user = self.appliance.jobs, self.appliance.settings.user
        counts = jobs.counts(user)
        running = counts.get("STARTED", 0) + counts.get("RUNNING", 0)
        waiting = counts.get("PENDING", 0)
        paused = self.appliance.queue is not None and self.appliance.queue.paused
        queued = f", {waiting} waiting" if waiting else ""
        if running:
            return "running", f"{NAME}: {running} running{queued}" + (" (queue paused)" if paused else "")
        if paused:
            return "paused", f"{NAME}: queue paused{queued}"
        last = jobs.last_ended(user)
        if last is not None and last.state in FAILED_STATES:
            return "failed", f"{NAME}: last job {last.state} ({last.app}, job {last.id[:8]})"
        return "idle", f"{NAME}: idle{queued}"

    # -- the menu's actions --------------------------------------------------------------------------------------

    def open_dashboard(self) -> None:
        self._open_url(self.dashboard_link())

    def open_inbox(self) -> None:
        folder = self.appliance.settings.inbox_path
        folder.mkdir(parents=True, exist_ok=True)
        opener = shutil.which("xdg-open")
        if opener is None:
            log.warning("cannot open the inbox folder: xdg-open is not installed", extra={"folder": str(folder)})
            return
        subprocess.Popen([opener, str(folder)], start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip

    @property
    def paused(self) -> bool:
        return self.appliance.queue is not None and self.appliance.queue.paused

    def toggle_pause(self) -> None:
        queue = self.appliance.queue
        if queue is None:
            return
        queue.resume() if queue.paused else queue.pause()
        self.appliance.jobs.changes.publish()  # open dashboards show it
        self.refresh()

    def quit(self) -> None:
        self._quit()
        self.stop()

    # -- the icon ------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Show the icon and serve its events until ``stop``; call from the main thread."""
        import pystray  # here: importing it needs a display

        state, title = self.status()
        self._state = state
        menu = pystray.Menu(
            pystray.MenuItem("Open dashboard", lambda: self.open_dashboard(), default=True),
            pystray.MenuItem("Open inbox folder", lambda: self.open_inbox()),
            pystray.MenuItem("Pause queue", lambda: self.toggle_pause(), checked=lambda _: self.paused),
            pystray.Menu.SEPARATOR,
            pystray.MenuItem("Quit", lambda: self.quit()),
        )
        self._icon = pystray.Icon(NAME, icon_image(state), title, menu)
        if self._stopped.is_set():
            return
        self._icon.run(setup=self._setup)

    def _setup(self, icon: Any) -> None:
        icon.visible = True
        threading.Thread(target=self._follow, name="tray", daemon=True).start()

    def _follow(self) -> None:
        seen = None
        next_dock, wait = time.monotonic(), DOCK_RETRY_SECONDS
        while not self._stopped.wait(REFRESH_SECONDS):
            now = (self.appliance.jobs.changes.version, self.paused)
            if now != seen:
                seen = now
                self.refresh()
            if time.monotonic() >= next_dock:
                # look often while undocked at first, then less and less (a desktop without a tray host)
                wait = DOCK_RETRY_SECONDS if self._dock_if_needed() else min(wait * 2, MAX_DOCK_RETRY_SECONDS)
                next_dock = time.monotonic() + wait
        if self._x is not None:
            self._x.close()
        self._icon.stop()  # in case stop() came before the icon was running

    def _dock_if_needed(self) -> bool:
        """pystray's X11 backend asks the tray host to dock the icon only when it is shown or redrawn. With no tray
        host running yet (a desktop session may start us first), or one still starting up that misses the request,
        the icon stays undocked: look at where its window is (on a connection of our own) and redraw it, which asks
        again, until it is docked. Returns whether it is docked (True for other backends, which dock themselves)."""
        window = getattr(self._icon, "_window", None)
        if window is None:
            return True
        try:
            if self._x is None:
                from Xlib import display as xdisplay

                self._x = xdisplay.Display()
            parent = self._x.create_resource_object("window", window.id).query_tree().parent
            if parent.id != self._x.screen().root.id:
                return True
        except Exception:  # the window is gone (stopping) or the display went away
            return True
        if not self._told_undocked:
            log.info("no tray host holds the icon yet; it is docked as soon as one runs")
            logging.getLogger("pystray._xorg").setLevel(logging.CRITICAL)  # its "Failed to dock" at every try
            self._told_undocked = True
        self._icon.icon = self._icon.icon
        return False

    def refresh(self) -> None:
        icon = self._icon
        if icon is None:
            return
        try:
            state, title = self.status()
        except Exception:  # the database is closing at shutdown; the next look will do
            return
        if state != getattr(self, "_state", None):
            icon.icon = icon_image(state)
            self._state = state
        if icon.title != title:
            icon.title = title

    def stop(self) -> None:
        self._stopped.set()
        if self._icon is not None:
            self._icon.stop()
