import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, type ReactNode } from "react";
import { Link, Redirect, Route, Switch, useLocation } from "wouter";
import { useSession, type Session } from "./api";
import { setToken, useToken } from "./auth";
import { nameOf } from "./format";
import { Alerts } from "./pages/Alerts";
import { Audit } from "./pages/Audit";
import { Customers } from "./pages/Customers";
import { DepartmentPage } from "./pages/Department";
import { Finance } from "./pages/Finance";
import { Overview } from "./pages/Overview";
import { SignIn } from "./pages/SignIn";

function home(session: Session): string {
  if (session.role === "customer") return "/customers";
  return session.sees_organization ? "/overview" : `/department/${session.department ?? ""}`;
}

function NavLink(props: { href: string; children: ReactNode; match?: string }) {
  const [location] = useLocation();
  const current = location === props.href || (props.match !== undefined && location.startsWith(props.match));
  return (
    <Link href={props.href} aria-current={current ? "page" : undefined}>
      {props.children}
    </Link>
  );
}

function Shell(props: { session: Session; children: ReactNode }) {
  const s = props.session;
  const client = useQueryClient();
  const [location] = useLocation();
  const main = useRef<HTMLElement>(null);
  // After a client-side navigation, move focus to the new page (as a page load would).
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    main.current?.focus();
  }, [location]);
  const signOut = () => {
    setToken(null);
    client.clear();
  };
  const who =
    s.role === "customer" ? `Customer ${s.customer ?? ""}`
    : s.role === "manager" ? `Manager of ${nameOf(s, s.department)}` : s.role === "admin" ? "Administrator" : "Finance";
  return (
    <>
      <a className="skip" href="#main">Skip to content</a>
      <header className="top">
        <div className="brand">
          <span className="logo" aria-hidden="true" />
          costwarden
        </div>
        <nav aria-label="Pages">
          {s.role === "customer" ? <NavLink href="/customers">Usage and invoice</NavLink> : <>
          {s.sees_organization && <NavLink href="/overview">Overview</NavLink>}
          <NavLink href={s.sees_organization ? `/department/${s.departments[0]?.id ?? ""}` : home(s)} match="/department">
            {s.sees_organization ? "Departments" : nameOf(s, s.department)}
          </NavLink>
          {s.sees_organization && <NavLink href="/finance">Finance</NavLink>}
          <NavLink href="/alerts">Alerts</NavLink>
          <NavLink href="/audit">Audit</NavLink>
          {s.sees_organization && <NavLink href="/customers">Customers</NavLink>}
          </>}
        </nav>
        <div className="who">
          <span data-testid="signed-in-as">{who}</span>
          <button type="button" className="quiet" onClick={signOut}>Sign out</button>
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        {props.children}
      </main>
    </>
  );
}

export function App() {
  const token = useToken();
  const session = useSession();
  const client = useQueryClient();
  const [location, navigate] = useLocation();

  if (!token || session.error?.status === 401) {
    return (
      <SignIn
        onSignedIn={(s) => {
          client.setQueryData([sessionStorage.getItem("costwarden.token"), "/whoami"], s);
          // A deep link (a bookmarked department page) is kept; the start page goes to the role's home.
          if (location === "/" || location === "") navigate(home(s));
        }}
      />
    );
  }
  if (!session.data) {
    return (
      <main id="main" className="signin">
        {session.error ? <p className="problem" role="alert">{session.error.message}</p> : <p>Loading…</p>}
      </main>
    );
  }
  const s = session.data;
  if (s.role === "customer") {
    // A customer token reads its own usage and invoice only: every other address leads there.
    return (
      <Shell session={s}>
        <Switch>
          <Route path="/customers">{() => <Customers session={s} />}</Route>
          <Route>{() => <Redirect to="/customers" replace />}</Route>
        </Switch>
      </Shell>
    );
  }
  return (
    <Shell session={s}>
      <Switch>
        <Route path="/">{() => <Redirect to={home(s)} replace />}</Route>
        <Route path="/overview">{() => (s.sees_organization ? <Overview session={s} /> : <Redirect to={home(s)} replace />)}</Route>
        <Route path="/department/:id?">
          {(params) =>
            !s.sees_organization && params.id && params.id !== s.department ? (
              <Redirect to={home(s)} replace />
            ) : (
              <DepartmentPage session={s} id={params.id} />
            )
          }
        </Route>
        <Route path="/finance">{() => (s.sees_organization ? <Finance session={s} /> : <Redirect to={home(s)} replace />)}</Route>
        <Route path="/alerts">{() => <Alerts session={s} />}</Route>
        <Route path="/audit">{() => <Audit session={s} />}</Route>
        <Route path="/customers">{() => <Customers session={s} />}</Route>
        <Route>
          <h1>Page not found</h1>
          <p>
            <Link href={home(s)}>Go to the start page</Link>
          </p>
        </Route>
      </Switch>
    </Shell>
  );
}
