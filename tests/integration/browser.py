"""browser.py: a headless Chromium for the page's tests, benchmark and
screenshot (Debian's chromium, chromium-driver and python3-selenium).

    from browser import chromium
    driver = chromium()                 # 1280x900, headless, no network but loopback use
    driver.get(url)
    driver.get_log("browser")           # console messages (level SEVERE = errors)
    network_urls(driver)                # every URL the pages asked for (CDP log)
    driver.quit()

The browser's own background traffic (updates, safe browsing, metrics) is
turned off by flags, so what the page fetches is all there is.
"""

import json
import os
import shutil
import socket
import tempfile

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium(width=1280, height=900, scale=1):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="optd-chromium-")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--no-default-browser-check", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--disable-default-apps", "--metrics-recording-only",
              "--disable-features=Translate,OptimizationHints,MediaRouter",
              "--safebrowsing-disable-auto-update", "--password-store=basic",
              "--hide-scrollbars", "--font-render-hinting=none",
              "--force-device-scale-factor=%g" % scale,
              "--window-size=%d,%d" % (width, height), "--user-data-dir=" + profile):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # Selenium talks to chromedriver at "localhost": say so plainly when the
    # machine cannot resolve it (a bare chroot without /etc/hosts), rather
    # than "Can not connect to the Service".
    try:
        socket.getaddrinfo("localhost", None)
    except OSError as e:
        raise RuntimeError("'localhost' does not resolve here (%s): chromedriver and selenium need "
                           "it; every installed Debian has it in /etc/hosts" % e)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_path=os.devnull), options=opts)
    quit_ = driver.quit

    def quit_and_clean():
        try:
            quit_()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    driver.quit = quit_and_clean
    return driver


def network_requests(driver):
    """(url, headers) of every request the browser's pages sent since the
    last call (Chrome DevTools' Network.requestWillBeSent in the
    performance log)."""
    out = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            req = msg["params"]["request"]
            out.append((req["url"], req.get("headers") or {}))
    return out


def network_urls(driver):
    """The URLs of network_requests."""
    return [u for u, _ in network_requests(driver)]


def console_errors(driver, allow=()):
    """SEVERE console messages, less those containing one of allow."""
    return [e for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and not any(a in e.get("message", "") for a in allow)]
