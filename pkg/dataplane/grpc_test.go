package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// echoService answers every FullDuplexCall message with "<backend>:<body>"
// and ends the stream with a trailer naming the backend. A message "fail"
// ends the stream with NOT_FOUND instead.
type echoService struct {
	testgrpc.UnimplementedTestServiceServer
	name string
}

func (s *echoService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	stream.SetTrailer(metadata.Pairs("x-backend", s.name))
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if string(req.GetPayload().GetBody()) == "fail" {
			return status.Error(codes.NotFound, "no such thing")
		}
		body := append([]byte(s.name+":"), req.GetPayload().GetBody()...)
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
}

func startGRPCBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, &echoService{name: name})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return &backend{name: name, addr: ln.Addr().String()}
}

func TestGRPCBidiStreamingThroughSplit(t *testing.T) {
	t.Parallel()
	g1, g2 := startGRPCBackend(t, "g1"), startGRPCBackend(t, "g2")
	res := singleRoute(routeSplit(prefixMatch("/"), split{cluster: "g1", weight: 50}, split{cluster: "g2", weight: 50}))
	addBackends(res, true, g1, g2)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)

	conn, err := grpc.NewClient(p.ListenerAddr(listenerName).String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testgrpc.NewTestServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const streams, roundTrips = 16, 100
	var mu sync.Mutex
	perBackend := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream, err := client.FullDuplexCall(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			backend := ""
			for j := 0; j < roundTrips; j++ {
				msg := fmt.Sprintf("s%d-m%d", i, j)
				if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(msg)}}); err != nil {
					t.Error(err)
					return
				}
				resp, err := stream.Recv()
				if err != nil {
					t.Errorf("stream %d round trip %d: %v", i, j, err)
					return
				}
				got := string(resp.GetPayload().GetBody())
				name, body, _ := strings.Cut(got, ":")
				if body != msg || (backend != "" && name != backend) {
					t.Errorf("stream %d: got %q (backend so far %q)", i, got, backend)
					return
				}
				backend = name
			}
			if err := stream.CloseSend(); err != nil {
				t.Error(err)
			}
			if _, err := stream.Recv(); err != io.EOF {
				t.Errorf("stream %d end: %v", i, err)
			}
			if tr := stream.Trailer().Get("x-backend"); len(tr) != 1 || tr[0] != backend {
				t.Errorf("stream %d trailers %v, want x-backend=%s", i, stream.Trailer(), backend)
			}
			mu.Lock()
			perBackend[backend]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if perBackend["g1"] == 0 || perBackend["g2"] == 0 {
		t.Errorf("split not applied per stream: %v", perBackend)
	}

	// A non-OK status travels in the trailers.
	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("fail")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.NotFound || status.Convert(err).Message() != "no such thing" {
		t.Errorf("want NotFound, got %v", err)
	}
}

func TestGRPCLocalReplyIsTrailersOnly(t *testing.T) {
	t.Parallel()
	res := singleRoute(routeTo(prefixMatch("/"), "empty"))
	res.Clusters = append(res.Clusters, edsCluster("empty", true))
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	conn, err := grpc.NewClient(p.ListenerAddr(listenerName).String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := testgrpc.NewTestServiceClient(conn).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "no healthy upstream") {
		t.Errorf("want UNAVAILABLE no healthy upstream, got %v", err)
	}
}
