// caregraph GraphiQL bootstrap: queries over POST /graphql, subscriptions over the same path
// (graphql-transport-ws). A token passed as /graphiql#token=<jwt> (what `caregraph serve` prints)
// is kept in this browser's localStorage and sent as the Authorization header and in
// connection_init; the fragment never reaches the server's logs.
(function () {
  var KEY = 'caregraph.token';
  var fragment = new URLSearchParams(window.location.hash.slice(1));
  if (fragment.get('token')) {
    localStorage.setItem(KEY, fragment.get('token'));
    history.replaceState(null, '', window.location.pathname);
  }
  var token = localStorage.getItem(KEY);
  var initialHeaders = token ? JSON.stringify({ Authorization: 'Bearer ' + token }, null, 2) : '';
  var currentHeaders = initialHeaders;

  function authorization() {
    try {
      var parsed = JSON.parse(currentHeaders || '{}');
      return parsed.Authorization || parsed.authorization || '';
    } catch (e) {
      return '';
    }
  }

  var wsUrl = (window.location.protocol === 'https:' ? 'wss://' : 'ws://') + window.location.host + '/graphql';
  var wsClient = graphqlWs.createClient({
    url: wsUrl,
    lazy: true,
    keepAlive: 10000,
    connectionParams: function () {
      return { Authorization: authorization() };
    },
  });
  var fetcher = GraphiQL.createFetcher({ url: '/graphql', wsClient: wsClient });
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultHeaders: initialHeaders,
      headers: initialHeaders,
      shouldPersistHeaders: true,
      isHeadersEditorEnabled: true,
      onEditHeaders: function (value) {
        currentHeaders = value;
      },
      defaultQuery:
        '# Welcome to caregraph.\n# The Authorization header below was filled in from the link you opened.\n\n' +
        '{\n  viewer {\n    user { email displayName }\n    memberships { role title organization { id name } }\n  }\n}\n',
    })
  );
})();
