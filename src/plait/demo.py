"""Realistic multi-channel customer journeys, sent through the real collection API.

``generate(people, seed)`` yields Segment-spec messages in time order: people browse a
shop anonymously on several devices, view and add products, sign up (identify + "Signed
Up"), log in on another device (an identify that links that device's anonymousId), click
email campaigns (page calls from a server library whose URL carries ``ajs_uid`` and
``ajs_event``, from which the server derives an identify and a track), buy online and in
store (a POS receipt known only by the email given at the till), call the support line (a
call known only by the caller's phone number), join B2B accounts (group) and sometimes get
aliased. The same seed gives the same people, journeys and messageIds (re-sending a seed
is deduplicated by the log); timestamps spread over ``days`` ending at ``end`` (now).

``send(...)`` posts them to ``/v1/batch`` with a write key, paced by a token bucket, with
several requests in flight, retrying 429/5xx (honouring Retry-After) and transport errors.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from plait.spec import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES
from plait.spec.timestamps import format_timestamp

SITE = "https://shop.example.com"
SHOP = "Example Outfitters"
BROWSER_LIBRARY = {"name": "analytics.js", "version": "npm:next-1.70.0"}
SERVER_LIBRARY = {"name": "analytics-python", "version": "2.3.2"}
POS_LIBRARY = {"name": "analytics-python", "version": "2.3.2"}
CALL_LIBRARY = {"name": "analytics-node", "version": "2.1.2"}

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ana", "Arjun", "Beatriz", "Chen", "Chloe", "Dmitri", "Elena",
    "Emeka", "Fatima", "Grace", "Hana", "Ivan", "Jamal", "Jin", "Kofi", "Laura", "Lucas",
    "Maya", "Mei", "Mohammed", "Nadia", "Noah", "Olivia", "Omar", "Priya", "Rafael", "Rosa",
    "Sami", "Sofia", "Tariq", "Theo", "Valentina", "Wei", "Yara", "Yusuf", "Zoe", "Zanele",
)  # fmt: skip
LAST_NAMES = (
    "Abebe", "Andersen", "Bauer", "Costa", "Dubois", "Fernandes", "Garcia", "Haddad",
    "Ivanova", "Johnson", "Kim", "Kowalski", "Lopez", "Martin", "Mensah", "Morales",
    "Nakamura", "Nguyen", "Novak", "Okafor", "Olsen", "Patel", "Petrov", "Quinn", "Rossi",
    "Santos", "Schmidt", "Silva", "Singh", "Smith", "Tanaka", "Torres", "Wang", "Williams",
    "Yamamoto", "Zhang",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
# (locale, timezone, city, country)
PLACES = (
    ("en-US", "America/New_York", "New York", "US"),
    ("en-US", "America/Chicago", "Chicago", "US"),
    ("en-US", "America/Los_Angeles", "San Francisco", "US"),
    ("en-GB", "Europe/London", "London", "GB"),
    ("de-DE", "Europe/Berlin", "Berlin", "DE"),
    ("fr-FR", "Europe/Paris", "Paris", "FR"),
    ("pt-BR", "America/Sao_Paulo", "São Paulo", "BR"),
    ("en-IN", "Asia/Kolkata", "Bengaluru", "IN"),
    ("ja-JP", "Asia/Tokyo", "Tokyo", "JP"),
    ("en-AU", "Australia/Sydney", "Sydney", "AU"),
)
AREA_CODES = ("212", "312", "415", "617", "206", "303", "512", "646", "718", "202")

# (kind, userAgent, screen width, height, density)
DEVICES = {
    "desktop": (
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/124.0.0.0 Safari/537.36", 1920, 1080, 1),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
         "Gecko) Version/17.4 Safari/605.1.15", 1512, 982, 2),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", 2560, 1440, 1),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80", 1366, 768, 1),
    ),
    "mobile": (
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
         "like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", 393, 852, 3),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/124.0.6367.82 Mobile Safari/537.36", 412, 915, 2.625),
        ("Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/124.0.6367.82 Mobile Safari/537.36", 360, 780, 3),
    ),
    "tablet": (
        ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
         "Gecko) Version/17.4 Mobile/15E148 Safari/604.1", 820, 1180, 2),
    ),
}  # fmt: skip

# (product_id, sku, name, brand, category, price, variants)
PRODUCTS = (
    ("prod_1001", "TEE-ORG-01", "Organic Cotton Tee", "Loomwork", "Apparel", 24.0,
     ("White", "Black", "Sage")),
    ("prod_1002", "HOOD-FLC-02", "Fleece Hoodie", "Loomwork", "Apparel", 68.0,
     ("Charcoal", "Navy")),
    ("prod_1003", "JKT-RAIN-03", "Packable Rain Jacket", "Northbound", "Outerwear", 129.0,
     ("Olive", "Yellow")),
    ("prod_1004", "JKT-DWN-04", "Down Puffer Jacket", "Northbound", "Outerwear", 219.0,
     ("Black", "Rust")),
    ("prod_1005", "SNK-RUN-05", "Everyday Runner", "Stride", "Footwear", 110.0,
     ("EU 40", "EU 42", "EU 44")),
    ("prod_1006", "BOOT-HK-06", "Trail Hiking Boot", "Stride", "Footwear", 165.0,
     ("EU 39", "EU 41", "EU 43")),
    ("prod_1007", "SCK-MRN-07", "Merino Socks 3-Pack", "Loomwork", "Accessories", 29.0,
     ("S", "M", "L")),
    ("prod_1008", "BAG-TOT-08", "Canvas Tote", "Carryall", "Accessories", 35.0,
     ("Natural",)),
    ("prod_1009", "BAG-BPK-09", "Commuter Backpack", "Carryall", "Accessories", 95.0,
     ("Black", "Grey")),
    ("prod_1010", "CAP-WOL-10", "Wool Beanie", "Northbound", "Accessories", 22.0,
     ("Oat", "Forest")),
    ("prod_1011", "MUG-CER-11", "Stoneware Mug", "Hearth", "Home", 18.0, ("Speckled",)),
    ("prod_1012", "BLK-THR-12", "Wool Throw Blanket", "Hearth", "Home", 89.0,
     ("Grey", "Terracotta")),
    ("prod_1013", "CAN-SOY-13", "Soy Candle", "Hearth", "Home", 26.0, ("Cedar", "Fig")),
    ("prod_1014", "BTL-STL-14", "Insulated Bottle", "Carryall", "Accessories", 32.0,
     ("750 ml", "1 l")),
    ("prod_1015", "PNT-CHN-15", "Stretch Chinos", "Loomwork", "Apparel", 79.0,
     ("30", "32", "34")),
    ("prod_1016", "SHT-LIN-16", "Linen Shirt", "Loomwork", "Apparel", 72.0,
     ("Sky", "White")),
)  # fmt: skip
CATEGORIES = sorted({p[4] for p in PRODUCTS})
_PRODUCT_SLUGS = tuple("-".join(p[2].lower().split()) for p in PRODUCTS)

# (referrer, utm source, utm medium, utm campaign); referrer "" is direct traffic
ENTRY_POINTS = (
    ("", None, None, None),
    ("", None, None, None),
    ("https://www.google.com/", None, None, None),
    ("https://www.google.com/", None, None, None),
    ("https://www.google.com/", "google", "cpc", "brand-search"),
    ("https://www.bing.com/", None, None, None),
    ("https://duckduckgo.com/", None, None, None),
    ("https://www.instagram.com/", "instagram", "social", "spring-lookbook"),
    ("https://www.facebook.com/", "facebook", "paid-social", "retargeting"),
    ("https://t.co/", "twitter", "social", None),
    ("https://www.reddit.com/", None, None, None),
    ("https://news.example.org/gift-guide", "gift-guide", "referral", "gift-guide"),
)
# (campaign slug, subject, landing path)
EMAIL_CAMPAIGNS = (
    ("welcome-series", "Welcome to Example Outfitters", "/"),
    ("spring-sale", "Spring sale: 20% off outerwear", "/category/outerwear"),
    ("new-arrivals", "New in: linen season", "/category/apparel"),
    ("abandoned-cart", "You left something behind", "/cart"),
    ("weekly-digest", "This week's picks", "/category/home"),
    ("win-back", "We miss you: free shipping this week", "/"),
)
STORES = (
    ("store_nyc_soho", "New York – SoHo"),
    ("store_chi_loop", "Chicago – The Loop"),
    ("store_sf_hayes", "San Francisco – Hayes Valley"),
    ("store_ldn_shoreditch", "London – Shoreditch"),
)
CALL_REASONS = ("order status", "return", "exchange", "billing", "product question", "account")
CALL_QUEUES = ("support", "support", "orders", "sales")
CALL_AGENTS = ("agent_ana", "agent_ben", "agent_chidi", "agent_dana", "agent_emil")
CALL_RESOLUTIONS = ("resolved", "resolved", "resolved", "escalated", "callback scheduled")
COMPANY_WORDS = (
    "Acme", "Bluebird", "Cobalt", "Driftwood", "Evergreen", "Foxglove", "Granite", "Harbor",
    "Ironwood", "Juniper", "Kestrel", "Lumen", "Meridian", "Northwind", "Orchard", "Pinecrest",
    "Quarry", "Redwood", "Summit", "Tidewater", "Umber", "Vantage", "Willow", "Zephyr",
)  # fmt: skip
COMPANY_SUFFIXES = ("Labs", "Inc", "Group", "Studio", "Partners", "Logistics", "Health", "Co")
INDUSTRIES = ("Software", "Retail", "Hospitality", "Healthcare", "Education", "Logistics",
              "Media", "Architecture")  # fmt: skip
PLANS = ("free", "free", "free", "plus", "plus", "pro")
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant
_M = 160_000_000  # size of the email/phone number space; _A is coprime with it
_A = 1_000_000_007


@dataclass(frozen=True, slots=True)
class Device:
    anonymous_id: str
    kind: str
    user_agent: str
    screen: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Company:
    group_id: str
    name: str
    industry: str
    employees: int
    plan: str
    website: str


@dataclass(frozen=True, slots=True)
class Person:
    """A simulated customer: who they are, and what their journey will (try to) contain.
    A journey is cut short where it would run past the end of the period."""

    index: int
    start: float  # epoch seconds of the first visit
    user_id: str
    first_name: str
    last_name: str
    email: str
    phone: str  # E.164
    plan: str
    locale: str
    timezone: str
    city: str
    country: str
    devices: tuple[Device, ...]
    signs_up: bool
    company: Company | None
    aliased: bool

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def anonymous_ids(self) -> list[str]:
        return [d.anonymous_id for d in self.devices]


def _uuid(rng: random.Random) -> str:
    """A random (version 4) UUID drawn from ``rng``."""
    h = f"{rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


class Cast:
    """The people of one seed: cheap to make (no messages); ``journey(i)`` builds one
    person's messages."""

    def __init__(self, people: int, seed: int = 1, days: float = 30.0, end: datetime | None = None):
        if people < 0:
            raise ValueError("people must be >= 0")
        if days <= 0:
            raise ValueError("days must be > 0")
        self.count = people
        self.seed = seed
        self.end = (end or datetime.now(UTC)).timestamp()
        self.begin = self.end - days * 86_400
        rng = random.Random(f"plait-demo:{seed}:starts")
        # First visits over the first 85% of the period, so most journeys have room.
        span = (self.end - self.begin) * 0.85
        self.starts = [round(self.begin + rng.random() * span, 3) for _ in range(people)]
        self.companies = [self._company(k) for k in range(max(3, people // 12))]

    def _company(self, k: int) -> Company:
        rng = random.Random(f"plait-demo:{self.seed}:company:{k}")
        name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}"
        return Company(
            group_id=f"acct_{rng.getrandbits(40):010x}",
            name=name,
            industry=rng.choice(INDUSTRIES),
            employees=rng.choice((8, 25, 60, 140, 400, 1200, 5000)),
            plan=rng.choice(("team", "team", "business", "enterprise")),
            website=f"https://{_slug(name)}.example.com",
        )

    def _rng(self, index: int) -> random.Random:
        return random.Random(f"plait-demo:{self.seed}:person:{index}")

    def person(self, index: int) -> Person:
        return self._person(index, self._rng(index))

    def _person(self, index: int, rng: random.Random) -> Person:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        # An affine permutation of the index: unique emails and phones within a seed.
        tag = (index * _A + self.seed * 7_919) % _M
        area, line = AREA_CODES[tag // 16_000_000], tag % 16_000_000
        phone = f"+1{area}{2 + line // 2_000_000}{line % 2_000_000:06d}"
        email = f"{first}.{last}.{_base36(tag)}@{rng.choice(EMAIL_DOMAINS)}".lower()
        locale, timezone, city, country = rng.choice(PLACES)
        kinds = ["desktop", "mobile"] if rng.random() < 0.6 else ["mobile", "desktop"]
        kinds.append("tablet")
        n_devices = rng.choices((1, 2, 3), weights=(45, 40, 15))[0]
        devices = []
        for kind in kinds[:n_devices]:
            agent, width, height, density = rng.choice(DEVICES[kind])
            screen = {"width": width, "height": height, "density": density}
            devices.append(Device(_uuid(rng), kind, agent, screen))
        signs_up = rng.random() < 0.65
        company = rng.choice(self.companies) if signs_up and rng.random() < 0.25 else None
        return Person(
            index=index,
            start=self.starts[index],
            user_id=f"usr_{rng.getrandbits(48):012x}",
            first_name=first,
            last_name=last,
            email=email,
            phone=phone,
            plan=rng.choice(PLANS),
            locale=locale,
            timezone=timezone,
            city=city,
            country=country,
            # Someone who never signs up stays on one device: nothing could link the others.
            devices=tuple(devices if signs_up else devices[:1]),
            signs_up=signs_up,
            company=company,
            aliased=signs_up and rng.random() < 0.1,
        )

    def people(self) -> Iterator[Person]:
        return (self.person(i) for i in range(self.count))

    def journey(self, index: int) -> list[tuple[float, dict[str, Any]]]:
        """(epoch seconds, message) in time order; the first is at the person's start."""
        rng = self._rng(index)
        person = self._person(index, rng)
        return _Journey(person, rng, self.end).build()

    def messages(self) -> Iterator[dict[str, Any]]:
        """Every person's messages merged in time order (ties by person, then step).

        A journey is built only when its first visit comes up, so memory holds the
        journeys in progress, not the whole run."""
        order = sorted(range(self.count), key=lambda i: (self.starts[i], i))
        heap: list[tuple[float, int, int, list]] = []
        pending = 0
        while pending < len(order) or heap:
            while pending < len(order) and (not heap or self.starts[order[pending]] <= heap[0][0]):
                index = order[pending]
                pending += 1
                steps = self.journey(index)
                if steps:
                    heapq.heappush(heap, (steps[0][0], index, 0, steps))
            if not heap:
                continue
            _, index, position, steps = heapq.heappop(heap)
            yield steps[position][1]
            if position + 1 < len(steps):
                heapq.heappush(heap, (steps[position + 1][0], index, position + 1, steps))


def generate(
    people: int, seed: int = 1, *, days: float = 30.0, end: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """The messages of ``people`` simulated customers, in time order. Deterministic for a
    seed and an ``end`` (default: now); messageIds depend on the seed only."""
    return Cast(people, seed, days, end).messages()


class _PastTheEnd(Exception):
    """The journey reached the end of the simulated period."""


class _Journey:
    def __init__(self, person: Person, rng: random.Random, end: float):
        self.p = person
        self.rng = rng
        self.end = end
        self.t = person.start
        self.out: list[tuple[float, dict[str, Any]]] = []
        self.session: list[tuple[float, dict[str, Any]]] = []
        self.logged_in: set[str] = set()  # anonymous ids of devices that know the userId

    # Building blocks ----------------------------------------------------------------

    def build(self) -> list[tuple[float, dict[str, Any]]]:
        try:
            self._story()
        except _PastTheEnd:
            pass
        return self.out

    def wait(self, low: float, high: float) -> None:
        self.t += self.rng.uniform(low, high)

    def between_sessions(self, mean_hours: float) -> None:
        """At least 20 minutes, on average ``mean_hours``."""
        self.t += 1_200 + self.rng.expovariate(1 / (mean_hours * 3_600))
        if self.t > self.end:
            raise _PastTheEnd

    def commit(self) -> None:
        """A session is all or nothing: one that would run past the end is dropped, so
        a login is never separated from the browsing it links."""
        session, self.session = self.session, []
        if session and session[-1][0] > self.end:
            raise _PastTheEnd
        self.out.extend(session)

    def emit(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.t = round(self.t, 3)
        stamp = format_timestamp(datetime.fromtimestamp(self.t, UTC))
        full = {"type": msg.pop("type"), "messageId": _uuid(self.rng), "timestamp": stamp,
                "originalTimestamp": stamp, **msg}  # fmt: skip
        self.session.append((self.t, full))
        return full

    # Web (analytics.js) ---------------------------------------------------------------

    def ids(self, device: Device) -> dict[str, str]:
        ids = {"anonymousId": device.anonymous_id}
        if device.anonymous_id in self.logged_in:
            ids["userId"] = self.p.user_id
        return ids

    def context(self, device: Device, page: dict[str, str], campaign: dict | None) -> dict:
        context = {
            "library": dict(BROWSER_LIBRARY),
            "userAgent": device.user_agent,
            "locale": self.p.locale,
            "timezone": self.p.timezone,
            "screen": dict(device.screen),
            "page": page,
        }
        if campaign:
            context["campaign"] = dict(campaign)
        return context

    def page(
        self,
        device: Device,
        path: str,
        title: str,
        name: str,
        referrer: str,
        query: dict[str, str] | None = None,
    ) -> tuple[dict[str, str], dict | None]:
        search = f"?{urlencode(query, quote_via=quote)}" if query else ""
        page = {"path": path, "referrer": referrer, "search": search,
                "title": f"{title} | {SHOP}", "url": f"{SITE}{path}{search}"}  # fmt: skip
        campaign = None
        if query and "utm_source" in query:
            campaign = {k[4:]: v for k, v in query.items() if k.startswith("utm_")}
        self.emit({"type": "page", **self.ids(device), "name": name, "properties": dict(page),
                   "context": self.context(device, page, campaign)})  # fmt: skip
        return page, campaign

    def track(self, device: Device, page_and_campaign, event: str, properties: dict) -> None:
        self.wait(1, 6)
        page, campaign = page_and_campaign
        self.emit({"type": "track", **self.ids(device), "event": event, "properties": properties,
                   "context": self.context(device, page, campaign)})  # fmt: skip

    def product(self, index: int | None = None, quantity: int = 1) -> dict[str, Any]:
        if index is None:
            index = self.rng.randrange(len(PRODUCTS))
        product_id, sku, name, brand, category, price, variants = PRODUCTS[index]
        return {"product_id": product_id, "sku": sku, "name": name, "brand": brand,
                "category": category, "variant": self.rng.choice(variants), "price": price,
                "quantity": quantity, "currency": "USD",
                "url": f"{SITE}/products/{_PRODUCT_SLUGS[index]}",
                "image_url": f"{SITE}/images/{sku.lower()}.jpg"}  # fmt: skip

    def browse(
        self,
        device: Device,
        entry: tuple[str, str | None, str | None, str | None] | None = None,
        views: int | None = None,
        add_probability: float = 0.3,
        cart: list[dict] | None = None,
        landing: tuple[str, dict[str, str] | None] | None = None,
    ) -> tuple[str, list[dict]]:
        """A browsing session's pages: a landing page, category and product pages with
        "Product Viewed", some "Product Added". Returns the last URL and the cart."""
        cart = [] if cart is None else cart
        cart_id = f"cart_{self.rng.getrandbits(40):010x}"
        if landing is not None:
            path, query = landing
            referrer = ""
        else:
            referrer, source, medium, campaign = entry or self.rng.choice(ENTRY_POINTS)
            query = None
            if source:
                query = {"utm_source": source, "utm_medium": medium}
                if campaign:
                    query["utm_campaign"] = campaign
            path = self.rng.choice(("/", "/", f"/category/{self.rng.choice(CATEGORIES).lower()}"))
        title = "Home" if path == "/" else path.strip("/").split("/")[-1].replace("-", " ").title()
        current = self.page(device, path, title, "Home" if path == "/" else "Landing",
                            referrer, query)  # fmt: skip
        url = current[0]["url"]
        for _ in range(views if views is not None else self.rng.randint(1, 4)):
            self.wait(8, 90)
            index = self.rng.randrange(len(PRODUCTS))
            item = self.product(index)
            path = f"/products/{_PRODUCT_SLUGS[index]}"
            current = self.page(device, path, item["name"], "Product", url)
            url = current[0]["url"]
            self.track(device, current, "Product Viewed", item)
            if self.rng.random() < add_probability:
                self.wait(5, 40)
                added = {**item, "cart_id": cart_id, "quantity": self.rng.choice((1, 1, 1, 2))}
                self.track(device, current, "Product Added", added)
                cart.append(added)
        return url, cart

    def checkout(self, device: Device, referrer: str, cart: list[dict]) -> None:
        if not cart:
            cart.append({**self.product(), "quantity": 1})
        self.wait(10, 60)
        products = [{k: v for k, v in item.items() if k not in ("cart_id", "currency")}
                    for item in cart]  # fmt: skip
        current = self.page(device, "/cart", "Your cart", "Cart", referrer)
        cart_id = cart[0].get("cart_id") or f"cart_{self.rng.getrandbits(40):010x}"
        self.track(device, current, "Cart Viewed", {"cart_id": cart_id, "products": products})
        order = self.order(products, "web")
        self.wait(10, 40)
        current = self.page(device, "/checkout", "Checkout", "Checkout", current[0]["url"])
        started = {k: order[k] for k in ("order_id", "value", "revenue", "currency", "products")}
        self.track(device, current, "Checkout Started", started)
        self.wait(40, 240)
        current = self.page(device, "/checkout/confirmation", "Thank you", "Order Confirmation",
                            current[0]["url"])  # fmt: skip
        self.track(device, current, "Order Completed", order)

    def order(self, products: list[dict], channel: str) -> dict[str, Any]:
        subtotal = round(sum(p["price"] * p["quantity"] for p in products), 2)
        coupon = self.rng.choice((None, None, None, "SPRING20", "WELCOME10"))
        discount = round(subtotal * (0.2 if coupon == "SPRING20" else 0.1), 2) if coupon else 0.0
        revenue = round(subtotal - discount, 2)
        shipping = 0.0 if channel != "web" or revenue >= 75 else 5.99
        tax = round(revenue * 0.08, 2)
        prefix = {"web": "W", "pos": "S"}[channel]
        order = {
            "order_id": f"{prefix}{self.rng.getrandbits(40):012d}",
            "affiliation": "Online Store" if channel == "web" else "Retail Store",
            "value": subtotal,
            "subtotal": subtotal,
            "discount": discount,
            "revenue": revenue,
            "shipping": shipping,
            "tax": tax,
            "total": round(revenue + shipping + tax, 2),
            "currency": "USD",
            "products": products,
        }
        if coupon:
            order["coupon"] = coupon
        return order

    # The other channels -------------------------------------------------------------------

    def identify_traits(self) -> dict[str, Any]:
        p = self.p
        traits = {"email": p.email, "name": p.name, "firstName": p.first_name,
                  "lastName": p.last_name, "phone": p.phone, "plan": p.plan,
                  "createdAt": format_timestamp(datetime.fromtimestamp(self.t, UTC)),
                  "address": {"city": p.city, "country": p.country}}  # fmt: skip
        if p.company:
            traits["company"] = {"id": p.company.group_id, "name": p.company.name}
        return traits

    def sign_up(self, device: Device) -> None:
        url, cart = self.browse(device, views=self.rng.randint(0, 2))
        self.wait(10, 60)
        current = self.page(device, "/signup", "Create your account", "Sign Up", url)
        self.wait(30, 150)
        self.logged_in.add(device.anonymous_id)
        self.emit({"type": "identify", **self.ids(device), "traits": self.identify_traits(),
                   "context": self.context(device, *current)})  # fmt: skip
        self.track(device, current, "Signed Up",
                   {"method": self.rng.choice(("email", "email", "google", "apple")),
                    "plan": self.p.plan})  # fmt: skip
        if self.p.aliased:
            self.wait(0, 1)
            self.emit({"type": "alias", **self.ids(device), "previousId": device.anonymous_id,
                       "context": self.context(device, *current)})  # fmt: skip
        if self.p.company:
            self.wait(0, 2)
            c = self.p.company
            self.emit({"type": "group", **self.ids(device), "groupId": c.group_id,
                       "traits": {"name": c.name, "industry": c.industry,
                                  "employees": c.employees, "plan": c.plan,
                                  "website": c.website},
                       "context": self.context(device, *current)})  # fmt: skip
        if cart and self.rng.random() < 0.5:
            self.checkout(device, current[0]["url"], cart)

    def log_in(self, device: Device) -> None:
        """Anonymous browsing on a new device, then a login that links it."""
        url, cart = self.browse(device, views=self.rng.randint(0, 2))
        self.wait(10, 40)
        current = self.page(device, "/login", "Log in", "Log In", url)
        self.wait(10, 40)
        self.logged_in.add(device.anonymous_id)
        self.emit({"type": "identify", **self.ids(device), "traits": {"email": self.p.email},
                   "context": self.context(device, *current)})  # fmt: skip
        self.track(device, current, "Signed In", {"method": "password"})
        if cart and self.rng.random() < 0.4:
            self.checkout(device, current[0]["url"], cart)

    def known_device(self) -> Device:
        known = [d for d in self.p.devices if d.anonymous_id in self.logged_in]
        return self.rng.choice(known)

    def email_click(self) -> None:
        """The click-tracking service reports a page call (a server library, so the
        server derives identify + "Email Clicked" from ajs_*); the browser then lands."""
        campaign, subject, path = self.rng.choice(EMAIL_CAMPAIGNS)
        utm = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": campaign}
        ajs = {"ajs_uid": self.p.user_id, "ajs_event": "Email Clicked",
               "ajs_prop_campaign": campaign, "ajs_prop_subject": subject,
               "ajs_prop_link": path}  # fmt: skip
        url = f"{SITE}{path}?{urlencode({**utm, **ajs}, quote_via=quote)}"
        self.emit({"type": "page", "anonymousId": f"click-{self.rng.getrandbits(64):016x}",
                   "name": "Email Link", "properties": {"url": url, "path": path},
                   "context": {"library": dict(SERVER_LIBRARY),
                               "page": {"url": url, "path": path, "title": subject,
                                        "referrer": ""}}})  # fmt: skip
        self.wait(1, 4)
        device = self.known_device()
        _, cart = self.browse(device, landing=(path, utm), add_probability=0.5)
        if cart and self.rng.random() < 0.5:
            self.checkout(device, f"{SITE}{path}", cart)

    def web_purchase(self) -> None:
        device = self.known_device()
        url, cart = self.browse(device, views=self.rng.randint(1, 3), add_probability=0.8)
        self.checkout(device, url, cart)

    def pos_purchase(self) -> None:
        """A till receipt: the store knows only the email the customer gave."""
        store_id, store_name = self.rng.choice(STORES)
        products = [{k: v for k, v in self.product().items()
                     if k not in ("url", "image_url", "currency")}
                    for _ in range(self.rng.randint(1, 3))]  # fmt: skip
        order = self.order(products, "pos")
        receipt = order["order_id"][1:]
        payment = self.rng.choice(("card", "card", "cash", "mobile"))
        order |= {"store_id": store_id, "store_name": store_name, "channel": "in-store",
                  "payment_method": payment}  # fmt: skip
        self.emit({"type": "track", "anonymousId": f"pos-{receipt}", "event": "Order Completed",
                   "properties": order,
                   "context": {"library": dict(POS_LIBRARY), "traits": {"email": self.p.email},
                               "location": {"city": store_name.split(" – ")[0]}}})  # fmt: skip

    def call(self) -> None:
        """A support call: the call center knows only the caller's phone number."""
        call_id = f"{self.rng.getrandbits(48):012x}"
        self.emit({"type": "track", "anonymousId": f"call-{call_id}", "event": "Call Completed",
                   "properties": {"call_id": call_id,
                                  "duration_seconds": self.rng.randint(45, 1500),
                                  "reason": self.rng.choice(CALL_REASONS),
                                  "queue": self.rng.choice(CALL_QUEUES),
                                  "agent": self.rng.choice(CALL_AGENTS),
                                  "resolution": self.rng.choice(CALL_RESOLUTIONS),
                                  "satisfaction": self.rng.randint(1, 5)},
                   "context": {"library": dict(CALL_LIBRARY),
                               "traits": {"phone": self.p.phone}}})  # fmt: skip

    def upgrade(self) -> None:
        device = self.known_device()
        current = self.page(device, "/account/plan", "Your plan", "Account", "")
        old = self.p.plan
        new = {"free": "plus", "plus": "pro"}.get(old, "pro")
        self.wait(20, 90)
        self.emit({"type": "identify", **self.ids(device), "traits": {"plan": new},
                   "context": self.context(device, *current)})  # fmt: skip
        self.track(device, current, "Plan Upgraded", {"from": old, "to": new})

    # The story ----------------------------------------------------------------------------

    def _story(self) -> None:
        rng, first = self.rng, self.p.devices[0]
        for visit in range(rng.randint(1, 3) if self.p.signs_up else rng.randint(1, 4)):
            if visit:
                self.between_sessions(30)
            self.browse(first)
            self.commit()
        if not self.p.signs_up:
            return
        self.between_sessions(20)
        self.sign_up(first)
        self.commit()
        later: list[Callable[[], None]] = []
        later += [lambda d=d: self.log_in(d) for d in self.p.devices[1:]]
        later += [self.web_purchase] * rng.choices((0, 1, 2, 3), weights=(35, 35, 20, 10))[0]
        later += [self.email_click] * rng.randint(0, 3)
        later += [self.pos_purchase] * (rng.randint(1, 2) if rng.random() < 0.3 else 0)
        later += [self.call] * (rng.randint(1, 2) if rng.random() < 0.2 else 0)
        later += [self.upgrade] * (self.p.plan != "pro" and rng.random() < 0.1)
        later += [lambda: self.browse(self.known_device())] * rng.randint(0, 2)
        rng.shuffle(later)
        for step in later:
            self.between_sessions(48)
            step()
            self.commit()


# Sending ------------------------------------------------------------------------------------


class SendError(Exception):
    """The server refused the run as a whole (a bad write key, a wrong URL)."""


@dataclass
class SendStats:
    sent: int = 0  # messages posted (once each, however many times retried)
    accepted: int = 0
    rejected: int = 0
    failed: int = 0  # in batches given up on after every retry
    batches: int = 0
    retries: int = 0
    reasons: Counter = field(default_factory=Counter)  # rejection and failure codes
    email_clicks: int = 0  # ajs_ pages among them: the server derives 2 more messages each
    connected: bool = False  # some request got an answer
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


class TokenBucket:
    """Pacing at ``rate`` messages a second. The bucket starts empty and a batch leaves
    once its tokens have accrued, so N messages never take less than N / rate seconds.
    A sender that falls behind makes up at most one batch's worth (the time spent building
    each batch is not lost: without it a 5,000/s target sent ~3,900/s), never a burst."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic):
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.clock = clock
        self._next: float | None = None

    def delay(self, tokens: int) -> float:
        """Reserve ``tokens``; returns the seconds to wait before using them."""
        if self.rate is None:
            return 0.0
        now = self.clock()
        cost = tokens / self.rate
        start = now if self._next is None else max(self._next, now - cost)
        self._next = start + cost
        return self._next - now

    async def acquire(self, tokens: int) -> None:
        delay = self.delay(tokens)
        if delay > 0:
            await asyncio.sleep(delay)


def batches(
    messages: Iterable[dict[str, Any]], size: int = 100, max_bytes: int = MAX_BATCH_BYTES - 4096
) -> Iterator[list[bytes]]:
    """Messages serialized and grouped: at most ``size`` a batch and a body under the
    server's limit."""
    size = max(1, min(size, MAX_BATCH_MESSAGES))
    batch: list[bytes] = []
    used = 0
    for message in messages:
        data = orjson.dumps(message)
        if batch and (len(batch) >= size or used + len(data) + 1 > max_bytes):
            yield batch
            batch, used = [], 0
        batch.append(data)
        used += len(data) + 1
    if batch:
        yield batch


def _body(batch: list[bytes]) -> bytes:
    sent_at = orjson.dumps(format_timestamp(datetime.now(UTC)))
    return b'{"batch":[' + b",".join(batch) + b'],"sentAt":' + sent_at + b"}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _error(response: httpx.Response) -> dict[str, Any]:
    """The error object of a refusal ({"code", "message", "rejected"?})."""
    try:
        error = response.json()["error"]
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            return error
    except Exception:  # not Plait's JSON: name the status instead
        pass
    return {"code": f"http_{response.status_code}"}


async def _post(
    client: httpx.AsyncClient,
    batch: list[bytes],
    stats: SendStats,
    max_retries: int,
    backoff: float,
) -> None:
    attempt = 0
    while True:
        retry_in = None
        try:
            response = await client.post(
                "/v1/batch", content=_body(batch), headers={"content-type": "application/json"}
            )
        except httpx.TransportError as exc:
            code = f"transport_{type(exc).__name__}"
            if isinstance(exc, httpx.ConnectError) and not stats.connected:
                raise SendError(f"cannot connect to {client.base_url}: {exc}") from None
        else:
            status = response.status_code
            stats.connected = True
            if status < 300:
                try:
                    body = response.json()
                except ValueError:  # a 2xx that is not Plait's JSON: all taken
                    body = {}
                rejected = body.get("rejected") if isinstance(body, dict) else None
                if not isinstance(rejected, list):
                    rejected = []
                stats.accepted += len(batch) - len(rejected)
                stats.rejected += len(rejected)
                stats.reasons.update(
                    r.get("code", "rejected") if isinstance(r, dict) else "rejected"
                    for r in rejected
                )
                return
            error = _error(response)
            code = error["code"]
            if status in (401, 403, 404):
                raise SendError(f"{status} {code} from {client.base_url}/v1/batch")
            if status != 429 and status < 500:  # the batch as a whole, e.g. all_rejected
                stats.rejected += len(batch)
                rejected = error.get("rejected")
                if isinstance(rejected, list) and len(rejected) == len(batch):
                    stats.reasons.update(r.get("code", code) for r in rejected)
                else:
                    stats.reasons[code] += len(batch)
                return
            retry_in = _retry_after(response)
            if retry_in is not None:
                retry_in = min(retry_in, 60.0)
        if attempt >= max_retries:  # the server stays unavailable: stop the run
            stats.failed += len(batch)
            stats.reasons[code] += len(batch)
            raise SendError(f"gave up on a batch after {max_retries} retries ({code})")
        if retry_in is None:
            retry_in = min(30.0, backoff * 2**attempt) * random.uniform(0.5, 1.0)
        attempt += 1
        stats.retries += 1
        await asyncio.sleep(retry_in)


async def send(
    messages: Iterable[dict[str, Any]],
    url: str,
    write_key: str,
    *,
    batch_size: int = 100,
    rate: float | None = None,
    concurrency: int = 4,
    max_retries: int = 8,
    backoff: float = 0.5,
    timeout: float = 30.0,
    stats: SendStats | None = None,
    on_batch: Callable[[SendStats], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SendStats:
    """POST ``messages`` to ``{url}/v1/batch``: ``concurrency`` requests in flight, at
    most ``rate`` messages a second (None: as fast as the server takes them). Raises
    SendError when the server refuses the write key or the endpoint."""
    stats = stats or SendStats()
    concurrency = max(1, concurrency)
    bucket = TokenBucket(rate)
    queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue(maxsize=max(2, concurrency * 2))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url.rstrip("/"), auth=(write_key, ""), timeout=timeout, limits=limits,
        transport=transport, headers={"user-agent": "plait-demo"},
    ) as client:  # fmt: skip

        async def produce() -> None:
            for batch in batches(messages, batch_size):
                await bucket.acquire(len(batch))
                await queue.put(batch)
            for _ in range(concurrency):
                await queue.put(None)

        async def work() -> None:
            while (batch := await queue.get()) is not None:
                stats.sent += len(batch)
                await _post(client, batch, stats, max_retries, backoff)
                stats.batches += 1
                if on_batch is not None:
                    on_batch(stats)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(concurrency):
                    group.create_task(work())
        except* SendError as errors:
            raise errors.exceptions[0] from None
        finally:
            stats.finished = time.monotonic()
    return stats


def send_with_progress(
    cast: Cast,
    url: str,
    write_key: str,
    *,
    console,
    stats: SendStats,
    batch_size: int = 100,
    rate: float | None = None,
    concurrency: int = 4,
    quiet: bool = False,
) -> SendStats:
    """``send`` the cast's messages with a Rich progress bar over the simulated period
    (the messages go out in time order, so that is how far the replay got)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from plait.spec.timestamps import parse_timestamp

    seen = {"timestamp": None, "email_clicks": 0}

    def tapped() -> Iterator[dict[str, Any]]:
        for message in cast.messages():
            seen["timestamp"] = message["timestamp"]
            if message["type"] == "page" and message.get("anonymousId", "").startswith("click-"):
                seen["email_clicks"] += 1
            yield message

    bar = Progress(
        SpinnerColumn(), TextColumn("[bold]demo"), BarColumn(), TextColumn("{task.fields[day]}"),
        TextColumn("{task.fields[sent]:>9,} sent {task.fields[accepted]:>9,} accepted "
                   "{task.fields[rejected]:>6,} rejected {task.fields[rate]:>7,.0f}/s"),
        TimeElapsedColumn(), console=console, disable=quiet,
    )  # fmt: skip
    task = bar.add_task("demo", total=cast.end - cast.begin, day="", sent=0, accepted=0,
                        rejected=0, rate=0.0)  # fmt: skip

    def update(s: SendStats) -> None:
        done = 0.0
        if seen["timestamp"] is not None:
            done = parse_timestamp(seen["timestamp"]).timestamp() - cast.begin
        day = (seen["timestamp"] or "")[:10]
        bar.update(task, completed=done, day=day, sent=s.sent, accepted=s.accepted,
                   rejected=s.rejected + s.failed, rate=s.rate)  # fmt: skip

    with bar:
        try:
            asyncio.run(send(tapped(), url, write_key, batch_size=batch_size, rate=rate,
                             concurrency=concurrency, stats=stats, on_batch=update))  # fmt: skip
            seen["timestamp"] = format_timestamp(datetime.fromtimestamp(cast.end, UTC))
        finally:
            stats.email_clicks = seen["email_clicks"]
            update(stats)
    return stats


def summary(stats: SendStats):
    """The run's figures as a Rich table."""
    from rich.table import Table

    table = Table("messages", "count", title="plait demo")
    table.add_row("sent", f"{stats.sent:,}")
    table.add_row("accepted", f"{stats.accepted:,}")
    table.add_row("rejected", f"{stats.rejected:,}")
    if stats.failed:
        table.add_row("failed (gave up after retries)", f"{stats.failed:,}")
    table.add_row("retried requests", f"{stats.retries:,}")
    table.add_row("batches", f"{stats.batches:,}")
    table.add_row("seconds", f"{stats.elapsed:,.2f}")
    table.add_row("events/s", f"{stats.rate:,.0f}")
    for code, count in stats.reasons.most_common():
        table.add_row(f"  {code}", f"{count:,}")
    return table


def write_jsonl(messages: Iterable[dict[str, Any]], out) -> int:
    """Write one compact JSON message a line to a binary file; returns the count."""
    count = 0
    for message in messages:
        out.write(orjson.dumps(message) + b"\n")
        count += 1
    return count
